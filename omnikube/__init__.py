"""Contracts shared by every Omnikube component.

Nothing here touches the network, a GPU or torch at import time. The worker, the gateway and the
operator import from this package; it imports none of them.
"""
