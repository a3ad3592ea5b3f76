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

run "rejects_a_short_key" {
  command = plan
  variables {
    encryption_key = "c2hvcnQ="
  }
  expect_failures = [var.encryption_key]
}
