# kube-git-deploy on Google Cloud: what exists today — Firestore, the job
# queue, secrets and the two HTTP functions. The runner and the API service
# are added with their issues.

data "google_project" "this" {}

locals {
  services = [
    "artifactregistry.googleapis.com",
    "cloudbuild.googleapis.com",
    "cloudfunctions.googleapis.com",
    "firestore.googleapis.com",
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
