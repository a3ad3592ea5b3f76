# The API service: the Skaffold API (gRPC + HTTP gateway) on Cloud Run,
# private by default — only api_invokers may call it (Cloud Run IAM). It
# speaks HTTP/2 end to end (h2c) so gRPC server streams work; both
# protocols share the one port. Created when api_image is set and
# secrets_ready is true (it reads the encryption key when it starts).

resource "google_service_account" "api" {
  account_id   = "kgd-api"
  display_name = "kube-git-deploy Skaffold API service"
}

resource "google_project_iam_member" "api" {
  for_each = toset(["roles/datastore.user"])
  project  = var.project_id
  role     = each.value
  member   = google_service_account.api.member
}

# Execute and Auto* queue pending jobs for the runners.
resource "google_pubsub_topic_iam_member" "api_publish" {
  topic  = google_pubsub_topic.jobs.id
  role   = "roles/pubsub.publisher"
  member = google_service_account.api.member
}

resource "google_secret_manager_secret_iam_member" "api" {
  secret_id = google_secret_manager_secret.encryption_key.id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.api.member
}

resource "google_cloud_run_v2_service" "api" {
  count               = local.api_enabled ? 1 : 0
  name                = "kgd-api"
  location            = var.region
  ingress             = "INGRESS_TRAFFIC_ALL"
  deletion_protection = false

  template {
    service_account = google_service_account.api.email
    # Event streams are long-lived; Cloud Run ends a request after this.
    timeout                          = "3600s"
    max_instance_request_concurrency = 250
    scaling {
      min_instance_count = 0
      max_instance_count = var.api_max_instances
    }
    containers {
      image = var.api_image
      ports {
        name           = "h2c"
        container_port = 8080
      }
      env {
        name  = "GOOGLE_CLOUD_PROJECT"
        value = var.project_id
      }
      env {
        name  = "KGD_JOBS_TOPIC"
        value = google_pubsub_topic.jobs.name
      }
      env {
        name  = "KGD_RETENTION"
        value = "${var.retention_days * 24}h"
      }
      env {
        name  = "KGD_OPERATORS"
        value = join(",", var.api_operators)
      }
      env {
        name = "KGD_ENCRYPTION_KEY"
        value_source {
          secret_key_ref {
            secret  = google_secret_manager_secret.encryption_key.secret_id
            version = "latest"
          }
        }
      }
      startup_probe {
        http_get {
          path = "/healthz"
        }
      }
      liveness_probe {
        http_get {
          path = "/healthz"
        }
      }
    }
  }
  depends_on = [google_secret_manager_secret_iam_member.api]
}

resource "google_cloud_run_v2_service_iam_member" "api_invoker" {
  for_each = local.api_enabled ? toset(var.api_invokers) : toset([])
  location = var.region
  name     = google_cloud_run_v2_service.api[0].name
  role     = "roles/run.invoker"
  member   = each.value
}

locals {
  api_enabled = var.api_image != "" && var.secrets_ready
}

# Where cloudbuild.yaml pushes the service images (API, runner). Tags are
# immutable: an image tag, once pushed, always names the same image, so a
# plan that pins a tag deploys what was tested. The runner may only read
# here (it pushes deployed applications' images to kgd-apps).
resource "google_artifact_registry_repository" "images" {
  location      = var.region
  repository_id = "kgd"
  format        = "DOCKER"
  description   = "kube-git-deploy service images"
  docker_config {
    immutable_tags = true
  }
}
