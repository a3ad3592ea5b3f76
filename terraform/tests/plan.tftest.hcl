# Offline checks of the configuration with a mocked provider: no Google API
# is contacted. Run with `make terraform-check`. The runner's own checks are
# in runner.tftest.hcl; this file plans the whole system (functions, API
# service, runner with a kubeconfig) and checks what spans it: secrets,
# service accounts, IAM, public access.

mock_provider "google" {
  mock_data "google_project" {
    defaults = {
      number = "123456789"
    }
  }
}

# Service account emails are computed by Google; give them values so that
# plans can compare who uses which account.
override_resource {
  target          = google_service_account.public
  override_during = plan
  values          = { email = "kgd-public@kgd-test.iam.gserviceaccount.com", member = "serviceAccount:kgd-public@kgd-test.iam.gserviceaccount.com" }
}
override_resource {
  target          = google_service_account.private
  override_during = plan
  values          = { email = "kgd-private@kgd-test.iam.gserviceaccount.com", member = "serviceAccount:kgd-private@kgd-test.iam.gserviceaccount.com" }
}
override_resource {
  target          = google_service_account.api
  override_during = plan
  values          = { email = "kgd-api@kgd-test.iam.gserviceaccount.com", member = "serviceAccount:kgd-api@kgd-test.iam.gserviceaccount.com" }
}
override_resource {
  target          = google_service_account.runner
  override_during = plan
  values          = { email = "kgd-runner@kgd-test.iam.gserviceaccount.com", member = "serviceAccount:kgd-runner@kgd-test.iam.gserviceaccount.com" }
}

variables {
  project_id        = "kgd-test"
  github_client_id  = "client-id"
  functions_source  = "tests/bundle.placeholder"
  secrets_ready     = true
  private_invokers  = ["group:deployers@example.com"]
  api_image         = "us-docker.pkg.dev/kgd-test/kgd/api:test"
  api_invokers      = ["group:deployers@example.com"]
  runner_image      = "us-central1-docker.pkg.dev/kgd-test/kgd/runner:test"
  kubeconfig_secret = "kgd-kubeconfig"
}

run "plan" {
  command = plan

  assert {
    condition     = google_pubsub_subscription.runner.dead_letter_policy[0].max_delivery_attempts == 5
    error_message = "jobs must move to the dead-letter topic after 5 deliveries by default"
  }
  assert {
    condition     = google_pubsub_topic_iam_member.dead_publisher.member == "serviceAccount:service-123456789@gcp-sa-pubsub.iam.gserviceaccount.com"
    error_message = "the Pub/Sub service agent must be allowed to forward dead letters"
  }
  assert {
    condition     = google_cloud_run_service_iam_member.public_invoker[0].member == "allUsers"
    error_message = "GitHub and users' browsers must be able to reach PublicAPI"
  }
  assert {
    condition     = keys(google_cloud_run_service_iam_member.private_invoker) == ["group:deployers@example.com"]
    error_message = "PrivateAPI must be callable only by private_invokers"
  }
  assert {
    condition     = google_cloudfunctions2_function.private[0].build_config[0].entry_point == "PrivateAPI" && google_cloudfunctions2_function.public[0].build_config[0].entry_point == "PublicAPI"
    error_message = "entry points must be the registered function names"
  }
  assert {
    condition     = google_firestore_field.deliveries_ttl.field == "expire_at" && google_firestore_field.events_ttl.collection == "events" && google_firestore_field.jobs_ttl.field == "expire_at" && google_firestore_field.oauth_states_ttl.collection == "oauth_states"
    error_message = "deliveries, events, jobs and OAuth states need TTL policies"
  }
  assert {
    condition     = google_artifact_registry_repository.images.docker_config[0].immutable_tags
    error_message = "service image tags (the API's, the runner's) must be immutable"
  }
  assert {
    condition = length(setsubtract(
      ["compute.googleapis.com", "monitoring.googleapis.com", "logging.googleapis.com", "container.googleapis.com", "iam.googleapis.com"],
      keys(google_project_service.this),
    )) == 0
    error_message = "the APIs of the runner (Compute Engine, logging, monitoring, GKE, IAM) must be enabled"
  }
}

run "api_service" {
  command = plan

  assert {
    condition     = keys(google_cloud_run_v2_service_iam_member.api_invoker) == ["group:deployers@example.com"]
    error_message = "the API service must be callable only by api_invokers"
  }
  assert {
    condition     = google_cloud_run_v2_service.api[0].template[0].containers[0].ports[0].name == "h2c"
    error_message = "the API service needs end-to-end HTTP/2 for gRPC streams"
  }
  assert {
    condition     = [for e in google_cloud_run_v2_service.api[0].template[0].containers[0].env : e.value_source[0].secret_key_ref[0].secret if e.name == "KGD_ENCRYPTION_KEY"] == ["kgd-encryption-key"]
    error_message = "the API service's encryption key must come from Secret Manager"
  }
}

run "api_operators" {
  command = plan
  variables {
    api_operators = ["lead@example.com", "oncall@example.com"]
  }

  assert {
    condition     = [for e in google_cloud_run_v2_service.api[0].template[0].containers[0].env : e.value if e.name == "KGD_OPERATORS"] == ["lead@example.com,oncall@example.com"]
    error_message = "the API's global operators must come from api_operators"
  }
}

run "no_api_without_image" {
  command = plan
  variables {
    api_image = ""
  }
  assert {
    condition     = length(google_cloud_run_v2_service.api) == 0 && length(google_cloud_run_v2_service_iam_member.api_invoker) == 0
    error_message = "without api_image no API service is planned"
  }
}

# Least privilege: which account each component runs as, and what it holds.
run "service_accounts" {
  command = plan

  assert {
    condition     = google_cloudfunctions2_function.public[0].service_config[0].service_account_email == google_service_account.public.email
    error_message = "PublicAPI must run as kgd-public"
  }
  assert {
    condition     = google_cloudfunctions2_function.private[0].service_config[0].service_account_email == google_service_account.private.email
    error_message = "PrivateAPI must run as kgd-private"
  }
  assert {
    condition     = google_cloud_run_v2_service.api[0].template[0].service_account == google_service_account.api.email
    error_message = "the API service must run as kgd-api"
  }
  assert {
    condition     = google_compute_region_instance_template.runner[0].service_account[0].email == google_service_account.runner[0].email
    error_message = "the runner VMs must run as kgd-runner"
  }
  # The four above are all there are: every service account is used.
  assert {
    condition     = length(flatten([for f in fileset(path.module, "*.tf") : regexall("resource\\s+\"google_service_account\"", file("${path.module}/${f}"))])) == 4
    error_message = "every google_service_account must be used by a function, the API service or the runner template (update this test when adding one)"
  }
  assert {
    condition     = google_service_account.public.account_id == "kgd-public" && google_service_account.private.account_id == "kgd-private" && google_service_account.runner[0].account_id == "kgd-runner"
    error_message = "the functions and the runner must have their own service accounts"
  }
  assert {
    condition     = keys(google_project_iam_member.public) == ["roles/datastore.user"] && keys(google_project_iam_member.private) == ["roles/datastore.user"]
    error_message = "the functions' only project role is roles/datastore.user"
  }
  assert {
    condition     = google_pubsub_topic_iam_member.public_publish.member == google_service_account.public.member && google_pubsub_topic_iam_member.public_publish.role == "roles/pubsub.publisher"
    error_message = "PublicAPI must be allowed to publish jobs"
  }
  assert {
    condition = length([for m in [
      google_pubsub_topic_iam_member.public_publish.member,
      google_pubsub_topic_iam_member.api_publish.member,
      google_pubsub_topic_iam_member.runner_publish[0].member,
      google_pubsub_topic_iam_member.runner_events[0].member,
      google_pubsub_topic_iam_member.dead_publisher.member,
      google_pubsub_subscription_iam_member.runner[0].member,
      google_pubsub_subscription_iam_member.dead_subscriber.member,
    ] : m if m == google_service_account.private.member]) == 0
    error_message = "PrivateAPI must have no Pub/Sub access"
  }
  assert {
    condition     = keys(google_secret_manager_secret_iam_member.public) == ["GITHUB_CLIENT_SECRET", "KGD_ENCRYPTION_KEY"] && keys(google_secret_manager_secret_iam_member.private) == ["GITHUB_CLIENT_SECRET", "KGD_ENCRYPTION_KEY"]
    error_message = "both functions read the GitHub client secret (OAuth code exchange) and the encryption key"
  }
  assert {
    condition     = alltrue([for m in values(google_secret_manager_secret_iam_member.public) : m.role == "roles/secretmanager.secretAccessor" && m.member == google_service_account.public.member])
    error_message = "PublicAPI's secret bindings must be secretAccessor for kgd-public"
  }
}

run "no_editor_or_owner" {
  command = plan

  assert {
    condition = alltrue([for r in concat(
      keys(google_project_iam_member.public),
      keys(google_project_iam_member.private),
      keys(google_project_iam_member.api),
      keys(google_project_iam_member.runner),
    ) : !contains(["roles/editor", "roles/owner"], r)])
    error_message = "no service account may be project editor or owner"
  }
  # The four google_project_iam_member resources above are all there are.
  assert {
    condition     = length(flatten([for f in fileset(path.module, "*.tf") : regexall("resource\\s+\"google_project_iam_member\"", file("${path.module}/${f}"))])) == 4
    error_message = "a new google_project_iam_member must be added to the editor/owner check"
  }
  assert {
    condition     = length(flatten([for f in fileset(path.module, "*.tf") : regexall("roles/(editor|owner)\\b", file("${path.module}/${f}"))])) == 0
    error_message = "no binding anywhere may grant roles/editor or roles/owner"
  }
}

# PublicAPI is the only thing anyone may call; it serves the OAuth callback.
run "public_access" {
  command = plan

  assert {
    condition = [for m in concat(
      google_cloud_run_service_iam_member.public_invoker,
      values(google_cloud_run_service_iam_member.private_invoker),
      values(google_cloud_run_v2_service_iam_member.api_invoker),
    ) : m.member if m.role == "roles/run.invoker" && contains(["allUsers", "allAuthenticatedUsers"], m.member)] == ["allUsers"]
    error_message = "exactly one run.invoker binding (PublicAPI's) may be public"
  }
  assert {
    condition     = length(flatten([for f in fileset(path.module, "*.tf") : regexall("\"all(Authenticated)?Users\"", file("${path.module}/${f}"))])) == 1
    error_message = "allUsers must appear exactly once in the configuration: PublicAPI's invoker"
  }
  assert {
    condition     = google_cloudfunctions2_function.public[0].service_config[0].environment_variables["KGD_OAUTH_CALLBACK_URL"] == "https://us-central1-kgd-test.cloudfunctions.net/PublicAPI/api/v0/github/oauth_callback"
    error_message = "PublicAPI must know its OAuth callback URL, on PublicAPI"
  }
  assert {
    condition     = google_cloudfunctions2_function.private[0].service_config[0].environment_variables["KGD_OAUTH_CALLBACK_URL"] == "https://us-central1-kgd-test.cloudfunctions.net/PublicAPI/api/v0/github/oauth_callback"
    error_message = "PrivateAPI's OAuth redirect_uri must point at PublicAPI's callback (the browser cannot reach IAM-protected PrivateAPI)"
  }
  assert {
    condition     = output.oauth_callback_url == google_cloudfunctions2_function.public[0].service_config[0].environment_variables["KGD_OAUTH_CALLBACK_URL"]
    error_message = "the oauth_callback_url output must be the callback the functions use"
  }
}

run "oauth_callback_on_public_url" {
  command = plan
  variables {
    public_url = "https://deploy.example.com"
  }
  assert {
    condition     = output.oauth_callback_url == "https://deploy.example.com/api/v0/github/oauth_callback" && google_cloudfunctions2_function.private[0].service_config[0].environment_variables["KGD_OAUTH_CALLBACK_URL"] == output.oauth_callback_url
    error_message = "with public_url the OAuth callback is under it"
  }
}

# Secret values never pass through terraform.
run "secrets_by_reference" {
  command = plan

  assert {
    condition = alltrue([for f in [google_cloudfunctions2_function.public[0], google_cloudfunctions2_function.private[0]] :
      length(setintersection(keys(f.service_config[0].environment_variables), ["GITHUB_CLIENT_SECRET", "KGD_ENCRYPTION_KEY"])) == 0
    ])
    error_message = "secrets must come from Secret Manager, not plain environment variables"
  }
  assert {
    condition = alltrue([for f in [google_cloudfunctions2_function.public[0], google_cloudfunctions2_function.private[0]] :
      { for s in f.service_config[0].secret_environment_variables : s.key => "${s.secret}:${s.version}" } == { GITHUB_CLIENT_SECRET = "kgd-github-client-secret:latest", KGD_ENCRYPTION_KEY = "kgd-encryption-key:latest" }
    ])
    error_message = "both functions read GITHUB_CLIENT_SECRET and KGD_ENCRYPTION_KEY from the latest secret versions"
  }
  assert {
    condition     = length(flatten([for f in fileset(path.module, "*.tf") : regexall("resource\\s+\"google_secret_manager_secret_version\"", file("${path.module}/${f}"))])) == 0
    error_message = "terraform must not hold secret values: no google_secret_manager_secret_version"
  }
  assert {
    condition     = google_secret_manager_secret.github_client_secret.secret_id == "kgd-github-client-secret" && google_secret_manager_secret.encryption_key.secret_id == "kgd-encryption-key"
    error_message = "terraform creates the secret containers the operator adds versions to"
  }
  # Variable defaults: no key-like strings (long base64), PEM blocks or
  # GitHub tokens.
  assert {
    condition = length(flatten([for f in fileset(path.module, "*.tf") : concat(
      regexall("default\\s*=\\s*\"[A-Za-z0-9+/_=-]{20,}\"", file("${path.module}/${f}")),
      regexall("-----BEGIN|gh[pousr]_[A-Za-z0-9]{20}", file("${path.module}/${f}")),
    )])) == 0
    error_message = "no variable may have a secret-looking default"
  }
}

# A first apply creates only what needs no secret value.
run "secrets_not_ready" {
  command = plan
  variables {
    secrets_ready = false
  }
  assert {
    condition     = length(google_cloudfunctions2_function.public) == 0 && length(google_cloudfunctions2_function.private) == 0 && length(google_cloud_run_service_iam_member.public_invoker) == 0 && length(google_cloud_run_service_iam_member.private_invoker) == 0
    error_message = "without secrets_ready no function is planned"
  }
  assert {
    condition     = length(google_cloud_run_v2_service.api) == 0 && length(google_cloud_run_v2_service_iam_member.api_invoker) == 0
    error_message = "without secrets_ready no API service is planned"
  }
  assert {
    condition     = length(google_compute_region_instance_group_manager.runner) == 0 && length(google_compute_region_autoscaler.runner) == 0
    error_message = "without secrets_ready no runner VM group is planned"
  }
  assert {
    condition     = google_secret_manager_secret.encryption_key.secret_id == "kgd-encryption-key" && length(google_secret_manager_secret_iam_member.runner) == 2
    error_message = "without secrets_ready the secrets and their IAM are still planned, ready for gcloud secrets versions add"
  }
  assert {
    condition     = output.public_api_url == "" && output.private_api_url == "" && output.api_url == ""
    error_message = "without secrets_ready the URL outputs are empty"
  }
}

run "rejects_few_delivery_attempts" {
  command = plan
  variables {
    max_delivery_attempts = 2
  }
  expect_failures = [var.max_delivery_attempts]
}
