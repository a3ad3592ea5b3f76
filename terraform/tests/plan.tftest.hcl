# Offline checks of the configuration with a mocked provider: no Google API
# is contacted. Run with `make terraform-check`.

mock_provider "google" {
  mock_data "google_project" {
    defaults = {
      number = "123456789"
    }
  }
}

variables {
  project_id           = "kgd-test"
  github_client_id     = "client-id"
  github_client_secret = "client-secret"
  encryption_key       = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
  functions_source     = "tests/bundle.placeholder"
  private_invokers     = ["group:deployers@example.com"]
  api_image            = "us-docker.pkg.dev/kgd-test/kgd/api:test"
  api_invokers         = ["group:deployers@example.com"]
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
    condition     = google_cloud_run_service_iam_member.public_invoker.member == "allUsers"
    error_message = "GitHub must be able to reach PublicAPI"
  }
  assert {
    condition     = keys(google_cloud_run_service_iam_member.private_invoker) == ["group:deployers@example.com"]
    error_message = "PrivateAPI must be callable only by private_invokers"
  }
  assert {
    condition     = google_cloudfunctions2_function.private.build_config[0].entry_point == "PrivateAPI" && google_cloudfunctions2_function.public.build_config[0].entry_point == "PublicAPI"
    error_message = "entry points must be the registered function names"
  }
  assert {
    condition     = google_firestore_field.deliveries_ttl.field == "expire_at" && google_firestore_field.oauth_states_ttl.collection == "oauth_states"
    error_message = "deliveries and OAuth states need TTL policies"
  }
  assert {
    condition     = !contains(keys(google_cloudfunctions2_function.public.service_config[0].environment_variables), "KGD_ENCRYPTION_KEY")
    error_message = "secrets must come from Secret Manager, not plain environment variables"
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

run "rejects_a_short_key" {
  command = plan
  variables {
    encryption_key = "c2hvcnQ="
  }
  expect_failures = [var.encryption_key]
}
