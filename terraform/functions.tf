# PrivateAPI (tracking; IAM-only) and PublicAPI (GitHub webhooks and the
# OAuth callback; public) from one source bundle with two entry points, each
# with its own service account holding only what it needs. Created when
# secrets_ready is true.

locals {
  # Neither function can reference its own resource; these are the URLs
  # Cloud Functions gen2 gives them (unless a public_url/private_url fronts
  # them).
  public_url         = var.public_url != "" ? var.public_url : "https://${var.region}-${var.project_id}.cloudfunctions.net/PublicAPI"
  oauth_callback_url = "${local.public_url}/api/v0/github/oauth_callback"

  common_env = {
    GOOGLE_CLOUD_PROJECT = var.project_id
    GITHUB_CLIENT_ID     = var.github_client_id
    GITHUB_API_URL       = var.github_api_url
    GITHUB_WEB_URL       = var.github_web_url
    GITHUB_PRIVATE_REPOS = tostring(var.github_private_repos)
    KGD_JOBS_TOPIC       = google_pubsub_topic.jobs.name
    KGD_RETENTION        = "${var.retention_days * 24}h"
    # The browser comes back from GitHub's consent page here: it must be
    # PublicAPI, which the browser can reach without a Google ID token.
    KGD_OAUTH_CALLBACK_URL = local.oauth_callback_url
    # PUBLIC_HTTP_HOST: PrivateAPI creates hooks pointing at it; PublicAPI's
    # configuration requires it too.
    PUBLIC_HTTP_HOST = local.public_url
  }

  # Both functions open sealed data and exchange OAuth codes.
  function_secrets = {
    GITHUB_CLIENT_SECRET = google_secret_manager_secret.github_client_secret
    KGD_ENCRYPTION_KEY   = google_secret_manager_secret.encryption_key
  }
}

# PublicAPI: webhooks (store deliveries and jobs, publish jobs) and the
# OAuth callback (exchange the code: client secret; seal the token: key).
resource "google_service_account" "public" {
  account_id   = "kgd-public"
  display_name = "kube-git-deploy PublicAPI"
}

resource "google_project_iam_member" "public" {
  for_each = toset(["roles/datastore.user"])
  project  = var.project_id
  role     = each.value
  member   = google_service_account.public.member
}

resource "google_pubsub_topic_iam_member" "public_publish" {
  topic  = google_pubsub_topic.jobs.id
  role   = "roles/pubsub.publisher"
  member = google_service_account.public.member
}

resource "google_secret_manager_secret_iam_member" "public" {
  for_each  = local.function_secrets
  secret_id = each.value.id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.public.member
}

# PrivateAPI: tracking (Firestore, GitHub with the user's sealed token,
# webhook secrets); it queues nothing, so no Pub/Sub.
resource "google_service_account" "private" {
  account_id   = "kgd-private"
  display_name = "kube-git-deploy PrivateAPI"
}

resource "google_project_iam_member" "private" {
  for_each = toset(["roles/datastore.user"])
  project  = var.project_id
  role     = each.value
  member   = google_service_account.private.member
}

resource "google_secret_manager_secret_iam_member" "private" {
  for_each  = local.function_secrets
  secret_id = each.value.id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.private.member
}

resource "google_storage_bucket" "sources" {
  name                        = "${var.project_id}-kgd-sources"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = true
}

resource "google_storage_bucket_object" "functions" {
  # The content hash in the name makes a new bundle redeploy the functions.
  name   = "functions-${filemd5(var.functions_source)}.zip"
  bucket = google_storage_bucket.sources.name
  source = var.functions_source
}

resource "google_cloudfunctions2_function" "public" {
  count    = var.secrets_ready ? 1 : 0
  name     = "PublicAPI"
  location = var.region

  build_config {
    runtime     = var.go_runtime
    entry_point = "PublicAPI"
    source {
      storage_source {
        bucket = google_storage_bucket.sources.name
        object = google_storage_bucket_object.functions.name
      }
    }
  }

  service_config {
    available_memory               = "256M"
    timeout_seconds                = 30
    max_instance_count             = 20
    ingress_settings               = "ALLOW_ALL"
    all_traffic_on_latest_revision = true
    service_account_email          = google_service_account.public.email
    environment_variables          = local.common_env
    dynamic "secret_environment_variables" {
      for_each = local.function_secrets
      content {
        key        = secret_environment_variables.key
        project_id = var.project_id
        secret     = secret_environment_variables.value.secret_id
        version    = "latest"
      }
    }
  }
  depends_on = [google_secret_manager_secret_iam_member.public]
}

resource "google_cloudfunctions2_function" "private" {
  count    = var.secrets_ready ? 1 : 0
  name     = "PrivateAPI"
  location = var.region

  build_config {
    runtime     = var.go_runtime
    entry_point = "PrivateAPI"
    source {
      storage_source {
        bucket = google_storage_bucket.sources.name
        object = google_storage_bucket_object.functions.name
      }
    }
  }

  service_config {
    available_memory               = "256M"
    timeout_seconds                = 60
    max_instance_count             = 5
    ingress_settings               = "ALLOW_ALL"
    all_traffic_on_latest_revision = true
    service_account_email          = google_service_account.private.email
    environment_variables = merge(local.common_env, {
      PRIVATE_HTTP_HOST = local.private_url
    })
    dynamic "secret_environment_variables" {
      for_each = local.function_secrets
      content {
        key        = secret_environment_variables.key
        project_id = var.project_id
        secret     = secret_environment_variables.value.secret_id
        version    = "latest"
      }
    }
  }
  depends_on = [google_secret_manager_secret_iam_member.private]
}

# GitHub (webhooks) and users' browsers (OAuth callback) must reach
# PublicAPI without Google credentials; webhook deliveries are
# authenticated by their HMAC signature, callbacks by the signed,
# single-use OAuth state. This is the only allUsers binding.
resource "google_cloud_run_service_iam_member" "public_invoker" {
  count    = var.secrets_ready ? 1 : 0
  location = var.region
  service  = google_cloudfunctions2_function.public[0].service_config[0].service
  role     = "roles/run.invoker"
  member   = "allUsers"
}

# PrivateAPI is callable only by the principals listed in private_invokers.
resource "google_cloud_run_service_iam_member" "private_invoker" {
  for_each = var.secrets_ready ? toset(var.private_invokers) : toset([])
  location = var.region
  service  = google_cloudfunctions2_function.private[0].service_config[0].service
  role     = "roles/run.invoker"
  member   = each.value
}
