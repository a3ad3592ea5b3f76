# kube-git-deploy on Google Cloud, the whole system in one apply:
#
#   firestore.tf  Firestore (native) with its indexes and TTL policies
#   pubsub.tf     the job queue (kgd-jobs → kgd-runner) and its dead letters,
#                 and the events topic kgd-events
#   secrets.tf    the Secret Manager secrets (values added with gcloud)
#   functions.tf  PublicAPI (webhooks, OAuth callback; public) and
#                 PrivateAPI (tracking; IAM-only) on Cloud Functions gen2
#   api.tf        the Skaffold API service on Cloud Run (api_image) and the
#                 service-images repository kgd
#   runner.tf     the runner (runner_image): a regional group of COS VMs,
#                 autoscaled on the job backlog, that builds with docker,
#                 pushes to the kgd-apps repository and deploys with helm to
#                 a GKE cluster (gke_cluster_name) or any cluster
#                 (kubeconfig_secret)
#
# Every component has its own service account with only the roles it needs.
# A new project takes two applies (see variable secrets_ready): the first
# creates the secrets, the operator adds their values with gcloud, the
# second (secrets_ready = true) creates what reads them.

data "google_project" "this" {}

locals {
  services = [
    "artifactregistry.googleapis.com",
    "cloudbuild.googleapis.com",
    "cloudfunctions.googleapis.com",
    "compute.googleapis.com",
    "container.googleapis.com",
    "firestore.googleapis.com",
    "iam.googleapis.com",
    "logging.googleapis.com",
    "monitoring.googleapis.com",
    "pubsub.googleapis.com",
    "run.googleapis.com",
    "secretmanager.googleapis.com",
    "storage.googleapis.com",
  ]
  pubsub_agent = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
  private_url  = var.private_url != "" ? var.private_url : "https://${var.region}-${var.project_id}.cloudfunctions.net/PrivateAPI"
}

resource "google_project_service" "this" {
  for_each           = toset(local.services)
  service            = each.value
  disable_on_destroy = false
}
