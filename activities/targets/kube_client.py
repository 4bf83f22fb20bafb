"""A client of the cluster an environment's target names."""

from __future__ import annotations

from kubernetes import client, config

from airagent.config import KubernetesTarget


def connect(target: KubernetesTarget) -> client.ApiClient:
    """An API client from the target's kubeconfig/context, else the pod's service account, else ~/.kube/config."""
    if target.kubeconfig or target.context:
        return config.new_client_from_config(
            config_file=str(target.kubeconfig) if target.kubeconfig else None, context=target.context
        )
    try:
        conf = client.Configuration()
        config.load_incluster_config(client_configuration=conf)
        return client.ApiClient(conf)
    except config.ConfigException:
        return config.new_client_from_config()
