"""Names shared by the CRDs, the operator and the tests: one place per key."""

GROUP = "mlops.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "mlops"
