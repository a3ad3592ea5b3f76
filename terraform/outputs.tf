output "public_api_url" {
  description = "PublicAPI's URL; webhooks are delivered to <it>/api/v0/github/repositories/OWNER/REPO/web_hook. Empty until secrets_ready."
  value       = var.secrets_ready ? google_cloudfunctions2_function.public[0].url : ""
}

output "private_api_url" {
  description = "PrivateAPI's URL (IAM-authenticated: private_invokers with a Google ID token). Empty until secrets_ready."
  value       = var.secrets_ready ? google_cloudfunctions2_function.private[0].url : ""
}

output "oauth_callback_url" {
  description = "Register this as the GitHub OAuth App's authorization callback URL (served by PublicAPI)."
  value       = local.oauth_callback_url
}

output "jobs_topic" {
  description = "Pub/Sub topic of jobs."
  value       = google_pubsub_topic.jobs.id
}

output "events_topic" {
  description = "Pub/Sub topic of every job event (ordering key: the job id); subscribe with message ordering on."
  value       = google_pubsub_topic.events.id
}

output "api_url" {
  description = "The API service's URL (IAM-authenticated; gRPC and HTTP on the same host), or empty when api_image is unset or secrets are not ready."
  value       = local.api_enabled ? google_cloud_run_v2_service.api[0].uri : ""
}

output "runner_service_account" {
  description = "The runner's service account email (grant it Kubernetes RBAC in the target cluster, as kind: User), or empty without runner_image."
  value       = local.runner ? google_service_account.runner[0].email : ""
}

output "apps_repository" {
  description = "Docker repository for deployed applications' images (the runner may push only here), or empty without runner_image."
  value       = local.runner ? "${var.region}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.apps[0].repository_id}" : ""
}
