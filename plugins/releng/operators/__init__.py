"""Thin Airflow operators that call releng.core and the hooks."""
