"""The Omnikube gateway: discovery, queue, proxy, data, admin API, web UI and metrics."""
