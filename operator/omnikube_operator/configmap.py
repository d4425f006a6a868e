"""The ConfigMap holding the rendered seed-format `config.json` that workers and gateway read."""

from __future__ import annotations

import json
from typing import Any

from omnikube.spec import render_config

from .context import COMPONENT_CONFIG, CONFIG_FILE, DATA_MOUNT_PATH, Owner, short_hash

# Keys only the gateway reads: changing them must not restart (and reload) every GPU worker.
GATEWAY_ONLY_SERVICE_KEYS = (
    "gateway_port", "max_queue_size", "request_timeout", "eta_chat_s", "eta_streaming_s",
    "eta_half_duplex_s", "eta_audio_duplex_s", "eta_omni_duplex_s", "eta_ema_alpha", "eta_ema_min_samples",
)


def rendered_config(owner: Owner) -> dict[str, Any]:
    """config.json as the pods see it: weights at the cache mount, data on the data volume."""
    config = render_config(owner.spec, model_path=owner.worker_model_path)
    config.service.data_dir = DATA_MOUNT_PATH
    return config.model_dump(mode="json")


def config_hash(owner: Owner) -> str:
    return short_hash(rendered_config(owner))


def worker_config_hash(owner: Owner) -> str:
    """Hash of the part of config.json a worker reads: a change here rolls the workers."""
    config = rendered_config(owner)
    for key in GATEWAY_ONLY_SERVICE_KEYS:
        config["service"].pop(key, None)
    config["audio"].pop("playback_delay_ms", None)
    return short_hash(config)


def build_configmap(owner: Owner) -> dict[str, Any]:
    return owner.adopt({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": owner.metadata(owner.config_map, COMPONENT_CONFIG),
        "data": {CONFIG_FILE: json.dumps(rendered_config(owner), indent=2, sort_keys=True) + "\n"},
    })
