# Secret Manager secrets. Terraform creates the containers and who may read
# them; the values are added by the operator, never through terraform
# variables, so no secret lands in terraform's state or plan:
#
#   gcloud secrets versions add kgd-github-client-secret --data-file=-   # paste, Ctrl-D
#   openssl rand -base64 32 | gcloud secrets versions add kgd-encryption-key --data-file=-
#
# and then apply again with secrets_ready = true (see that variable).

resource "google_secret_manager_secret" "github_client_secret" {
  secret_id = "kgd-github-client-secret"
  replication {
    auto {}
  }
  depends_on = [google_project_service.this]
}

resource "google_secret_manager_secret" "encryption_key" {
  secret_id = "kgd-encryption-key"
  replication {
    auto {}
  }
  depends_on = [google_project_service.this]
}

# Earlier versions of this configuration wrote the values from the
# variables github_client_secret and encryption_key. Forget those versions
# without destroying them: the deployed data stays readable, and the values
# leave the state.
removed {
  from = google_secret_manager_secret_version.github_client_secret
  lifecycle {
    destroy = false
  }
}

removed {
  from = google_secret_manager_secret_version.encryption_key
  lifecycle {
    destroy = false
  }
}
