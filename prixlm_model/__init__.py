"""Prix-LM: a multilingual knowledge-base language model and the pipeline around it.

Modules are imported where used so that an Airflow DAG parse stays cheap: importing this
package pulls in nothing heavy.
"""
