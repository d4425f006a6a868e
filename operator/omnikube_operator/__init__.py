"""The Omnikube operator: reconciles OmniDeployments into workers, a gateway and their objects."""
