"""The Omnikube worker: one process per GPU serving MiniCPM-o 4.5 over the demo protocol."""
