"""Airflow DAG: score each day's updated products with the LinNét Flex Template, one DAG run per day.

Airflow's own catch-up replaces the watermark here: `catchup=True` with `depends_on_past` runs missed
days in order, and `airflow dags backfill -s 2026-11-01 -e 2026-11-20 linnet_nightly` reruns a range
(each rerun replaces that day's partitions). Settings come from Airflow Variables `linnet_*`.
"""

from __future__ import annotations

import datetime as dt

from airflow import DAG
from airflow.models import Variable
from airflow.providers.google.cloud.operators.dataflow import DataflowStartFlexTemplateOperator

PROJECT = Variable.get("linnet_project", default_var="my-project")
REGION = Variable.get("linnet_region", default_var="us-central1")
BUCKET = Variable.get("linnet_bucket", default_var="gs://my-bucket")
MODEL = Variable.get("linnet_model", default_var=f"{BUCKET}/models/current")
IMAGE = Variable.get("linnet_image", default_var="")

with DAG(
    dag_id="linnet_nightly",
    description=__doc__.splitlines()[0],
    schedule="30 2 * * *",
    start_date=dt.datetime(2026, 11, 1, tzinfo=dt.UTC),
    catchup=True,
    max_active_runs=1,
    default_args={"depends_on_past": True, "retries": 2, "retry_delay": dt.timedelta(minutes=15)},
    tags=["linnet"],
) as dag:
    DataflowStartFlexTemplateOperator(
        task_id="score_day",
        project_id=PROJECT,
        location=REGION,
        wait_until_finished=True,
        body={
            "launchParameter": {
                "jobName": "linnet-{{ ds_nodash }}",
                "containerSpecGcsPath": f"{BUCKET}/templates/linnet-nightly.json",
                "parameters": {
                    "input": f"{BUCKET}/products/*.parquet",
                    "model": MODEL,
                    "output": f"{BUCKET}/out",
                    "since": "{{ ds }}",
                    "until": "{{ ds }}",
                    **({"sdk_container_image": IMAGE} if IMAGE else {}),
                },
                "environment": {"tempLocation": f"{BUCKET}/tmp", "stagingLocation": f"{BUCKET}/staging"},
            }
        },
    )
