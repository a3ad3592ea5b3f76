# PrivateAPI (OAuth, tracking; IAM-only) and PublicAPI (GitHub webhooks;
# public) from one source bundle with two entry points.

resource "google_service_account" "functions" {
  account_id   = "kgd-functions"
  display_name = "kube-git-deploy HTTP functions"
}

resource "google_project_iam_member" "functions" {
  for_each = toset(["roles/datastore.user"])
  project  = var.project_id
  role     = each.value
  member   = google_service_account.functions.member
}

resource "google_pubsub_topic_iam_member" "functions_publish" {
  topic  = google_pubsub_topic.jobs.id
  role   = "roles/pubsub.publisher"
  member = google_service_account.functions.member
}

resource "google_secret_manager_secret" "github_client_secret" {
  secret_id = "kgd-github-client-secret"
  replication {
    auto {}
  }
  depends_on = [google_project_service.this]
}

resource "google_secret_manager_secret_version" "github_client_secret" {
  secret      = google_secret_manager_secret.github_client_secret.id
  secret_data = var.github_client_secret
}

resource "google_secret_manager_secret" "encryption_key" {
  secret_id = "kgd-encryption-key"
  replication {
    auto {}
  }
  depends_on = [google_project_service.this]
}

resource "google_secret_manager_secret_version" "encryption_key" {
  secret      = google_secret_manager_secret.encryption_key.id
  secret_data = var.encryption_key
}

resource "google_secret_manager_secret_iam_member" "functions" {
  for_each  = { github = google_secret_manager_secret.github_client_secret.id, key = google_secret_manager_secret.encryption_key.id }
  secret_id = each.value
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.functions.member
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

locals {
  common_env = {
    GOOGLE_CLOUD_PROJECT = var.project_id
    GITHUB_CLIENT_ID     = var.github_client_id
    GITHUB_API_URL       = var.github_api_url
    GITHUB_WEB_URL       = var.github_web_url
    GITHUB_PRIVATE_REPOS = tostring(var.github_private_repos)
    KGD_JOBS_TOPIC       = google_pubsub_topic.jobs.name
  }
}

resource "google_cloudfunctions2_function" "public" {
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
    service_account_email          = google_service_account.functions.email
    # PUBLIC_HTTP_HOST is only used to create hooks, by PrivateAPI; the
    # configuration still requires it.
    environment_variables = merge(local.common_env, { PUBLIC_HTTP_HOST = var.public_url != "" ? var.public_url : "https://${var.region}-${var.project_id}.cloudfunctions.net/PublicAPI" })
    secret_environment_variables {
      key        = "GITHUB_CLIENT_SECRET"
      project_id = var.project_id
      secret     = google_secret_manager_secret.github_client_secret.secret_id
      version    = "latest"
    }
    secret_environment_variables {
      key        = "KGD_ENCRYPTION_KEY"
      project_id = var.project_id
      secret     = google_secret_manager_secret.encryption_key.secret_id
      version    = "latest"
    }
  }
  depends_on = [google_secret_manager_secret_iam_member.functions, google_secret_manager_secret_version.github_client_secret, google_secret_manager_secret_version.encryption_key]
}

resource "google_cloudfunctions2_function" "private" {
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
    service_account_email          = google_service_account.functions.email
    environment_variables = merge(local.common_env, {
      PUBLIC_HTTP_HOST  = var.public_url != "" ? var.public_url : google_cloudfunctions2_function.public.url
      PRIVATE_HTTP_HOST = local.private_url
    })
    secret_environment_variables {
      key        = "GITHUB_CLIENT_SECRET"
      project_id = var.project_id
      secret     = google_secret_manager_secret.github_client_secret.secret_id
      version    = "latest"
    }
    secret_environment_variables {
      key        = "KGD_ENCRYPTION_KEY"
      project_id = var.project_id
      secret     = google_secret_manager_secret.encryption_key.secret_id
      version    = "latest"
    }
  }
  depends_on = [google_secret_manager_secret_iam_member.functions, google_secret_manager_secret_version.github_client_secret, google_secret_manager_secret_version.encryption_key]
}

# GitHub must reach PublicAPI without Google credentials; the webhook
# authenticates deliveries by their HMAC signature instead.
resource "google_cloud_run_service_iam_member" "public_invoker" {
  location = var.region
  service  = google_cloudfunctions2_function.public.service_config[0].service
  role     = "roles/run.invoker"
  member   = "allUsers"
}

# PrivateAPI is callable only by the principals listed in private_invokers.
resource "google_cloud_run_service_iam_member" "private_invoker" {
  for_each = toset(var.private_invokers)
  location = var.region
  service  = google_cloudfunctions2_function.private.service_config[0].service
  role     = "roles/run.invoker"
  member   = each.value
}
