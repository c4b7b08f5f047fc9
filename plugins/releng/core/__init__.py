"""Pure domain logic: profiles, layout, formats, argv builders. No Airflow imports."""
