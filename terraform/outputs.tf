output "public_api_url" {
  description = "PublicAPI's URL; webhooks are delivered to <it>/api/v0/github/repositories/OWNER/REPO/web_hook."
  value       = google_cloudfunctions2_function.public.url
}

output "private_api_url" {
  description = "PrivateAPI's URL (IAM-authenticated)."
  value       = google_cloudfunctions2_function.private.url
}

output "oauth_callback_url" {
  description = "Register this as the GitHub OAuth App's authorization callback URL."
  value       = "${local.private_url}/api/v0/github/oauth_callback"
}

output "jobs_topic" {
  description = "Pub/Sub topic of jobs."
  value       = google_pubsub_topic.jobs.id
}

output "api_url" {
  description = "The API service's URL (IAM-authenticated; gRPC and HTTP on the same host), or empty when api_image is unset."
  value       = var.api_image == "" ? "" : google_cloud_run_v2_service.api[0].uri
}
