"""Names shared by the CRDs, the operator and the tests: one place per key."""

GROUP = "mlops.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "mlops"

FIELD_MANAGER = "mlops-operator"

# Labels on every child object.
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "mlops-operator"
LABEL_NAME = "app.kubernetes.io/name"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_DEPLOYMENT = f"{GROUP}/deployment"
LABEL_TRACK = f"{GROUP}/track"
LABEL_MODEL = f"{GROUP}/model"
LABEL_VERSION = f"{GROUP}/version"
# On pods whose init container `verify` checks the artifact (what the operator cannot reach).
LABEL_VERIFIED_BY_POD = f"{GROUP}/verified-by-pod"
ANNOTATION_MODEL_VERSION = f"{GROUP}/model-version"
ANNOTATION_ROLLOUT = f"{GROUP}/rollout"
"""A person's command to a canary rollout: promote, promote-full, abort, retry, pause or
resume, optionally followed by anything that makes the value new (kubectl mlops adds
the time), since a command is acted on once per value."""
VERIFY_CONTAINER = "verify"
TERMINATION_LOG = "/dev/termination-log"
LABEL_ARTIFACT_CREDENTIALS = f"{GROUP}/artifact-credentials"
"""A Secret opts in to being read as artifact credentials with this label set to "true",
as Argo CD's repository Secrets do: a ModelVersion author cannot name any other."""

SERVING_PORT = 8080
ARTIFACT_CACHE = "/tmp/mlops-serving"  # noqa: S108 - an emptyDir mounted in the pod
PVC_ROOT = "/mnt/models"
