"""Release engineering pipeline for Enterprise Linux on Apache Airflow."""
