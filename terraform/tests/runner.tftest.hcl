# The runner on GCE (runner.tf, runner/): group, autoscaler, auto-healing,
# service account, cloud-init and the cluster it deploys to. Offline, with
# a mocked provider; run with `make terraform-check`.

mock_provider "google" {
  mock_data "google_project" {
    defaults = {
      number = "123456789"
    }
  }
  # Mocked data sources return empty lists for blocks: give the cluster the
  # endpoint and CA the runner is configured with.
  mock_data "google_container_cluster" {
    defaults = {
      endpoint    = "10.0.0.1"
      master_auth = [{ cluster_ca_certificate = "Q0E=" }]
    }
  }
}

override_resource {
  target          = google_service_account.runner
  override_during = plan
  values          = { email = "kgd-runner@kgd-test.iam.gserviceaccount.com", member = "serviceAccount:kgd-runner@kgd-test.iam.gserviceaccount.com" }
}

variables {
  project_id               = "kgd-test"
  github_client_id         = "client-id"
  functions_source         = "tests/bundle.placeholder"
  secrets_ready            = true
  runner_image             = "us-central1-docker.pkg.dev/kgd-test/kgd/runner:test"
  runner_min_replicas      = 0
  runner_max_replicas      = 6
  runner_jobs_per_instance = 2
  gke_cluster_name         = "prod"
  gke_cluster_location     = "us-central1"
}

run "group_and_autoscaler" {
  command = plan

  assert {
    condition     = google_compute_region_instance_group_manager.runner[0].base_instance_name == "kgd-runner" && google_compute_region_instance_group_manager.runner[0].region == "us-central1"
    error_message = "the runner group must be the regional group kgd-runner"
  }
  assert {
    condition     = google_compute_region_autoscaler.runner[0].autoscaling_policy[0].metric[0].name == "pubsub.googleapis.com/subscription/num_undelivered_messages"
    error_message = "the runner group must scale on the job backlog (num_undelivered_messages)"
  }
  assert {
    condition     = google_compute_region_autoscaler.runner[0].autoscaling_policy[0].metric[0].filter == "resource.type = pubsub_subscription AND resource.labels.subscription_id = \"kgd-runner\""
    error_message = "the autoscaler's metric must be filtered on the kgd-runner subscription"
  }
  assert {
    condition     = google_compute_region_autoscaler.runner[0].autoscaling_policy[0].metric[0].single_instance_assignment == 2
    error_message = "one VM per runner_jobs_per_instance jobs (single_instance_assignment)"
  }
  assert {
    condition     = google_compute_region_autoscaler.runner[0].autoscaling_policy[0].min_replicas == 0 && google_compute_region_autoscaler.runner[0].autoscaling_policy[0].max_replicas == 6
    error_message = "min/max replicas must come from runner_min_replicas/runner_max_replicas"
  }
  assert {
    condition     = google_compute_region_autoscaler.runner[0].autoscaling_policy[0].scale_in_control[0].max_scaled_in_replicas[0].fixed == 1 && google_compute_region_autoscaler.runner[0].autoscaling_policy[0].scale_in_control[0].time_window_sec == 600
    error_message = "scale in at most one VM per 10 minutes"
  }
  assert {
    condition     = google_compute_health_check.runner[0].http_health_check[0].port == 8080 && google_compute_health_check.runner[0].http_health_check[0].request_path == "/healthz"
    error_message = "the health check must probe the runner's /healthz on port 8080"
  }
  assert {
    condition     = google_compute_region_instance_group_manager.runner[0].auto_healing_policies[0].initial_delay_sec == 300
    error_message = "auto-healing must give a new VM 300 s to boot and pull the image"
  }
  assert {
    condition     = google_compute_region_instance_group_manager.runner[0].update_policy[0].max_unavailable_fixed == 0 && google_compute_region_instance_group_manager.runner[0].update_policy[0].max_surge_fixed >= 4 && google_compute_region_instance_group_manager.runner[0].update_policy[0].instance_redistribution_type == "PROACTIVE" && google_compute_region_instance_group_manager.runner[0].update_policy[0].minimal_action == "REPLACE"
    error_message = "updates must surge new VMs first (a regional group needs a surge of at least its zones) and never take one down early"
  }
  assert {
    condition     = toset(google_compute_firewall.runner_health[0].source_ranges) == toset(["130.211.0.0/22", "35.191.0.0/16"]) && google_compute_firewall.runner_health[0].target_tags == toset(["kgd-runner"]) && [for a in google_compute_firewall.runner_health[0].allow : "${a.protocol}:${join(",", a.ports)}"] == ["tcp:8080"]
    error_message = "Google's health checkers must reach port 8080 of the kgd-runner VMs"
  }
}

run "instance_template" {
  command = plan

  assert {
    condition     = google_compute_region_instance_template.runner[0].disk[0].source_image == "cos-cloud/cos-stable" && google_compute_region_instance_template.runner[0].disk[0].disk_size_gb == 50
    error_message = "the runner VMs boot Container-Optimized OS with a 50 GB disk by default"
  }
  assert {
    condition     = google_compute_region_instance_template.runner[0].service_account[0].scopes == toset(["https://www.googleapis.com/auth/cloud-platform"]) || google_compute_region_instance_template.runner[0].service_account[0].scopes == toset(["cloud-platform"])
    error_message = "the VMs' access is governed by IAM alone (scope cloud-platform)"
  }
  assert {
    condition     = google_compute_region_instance_template.runner[0].shielded_instance_config[0].enable_secure_boot && google_compute_region_instance_template.runner[0].tags == toset(["kgd-runner"])
    error_message = "shielded VM with secure boot, tagged kgd-runner"
  }
  assert {
    condition     = google_compute_region_instance_template.runner[0].metadata["google-logging-enabled"] == "true" && google_compute_region_instance_template.runner[0].metadata["block-project-ssh-keys"] == "true"
    error_message = "logging on, project SSH keys blocked"
  }
  assert {
    condition     = length(google_compute_region_instance_template.runner[0].network_interface[0].access_config) == 1
    error_message = "by default the VMs get an ephemeral public IP for egress"
  }
}

run "no_external_ip" {
  command = plan
  variables {
    runner_external_ip = false
    runner_subnetwork  = "runners"
  }
  assert {
    condition     = length(google_compute_region_instance_template.runner[0].network_interface[0].access_config) == 0 && google_compute_region_instance_template.runner[0].network_interface[0].subnetwork == "runners"
    error_message = "runner_external_ip = false must leave the VMs without public IPs"
  }
}

run "cloud_init" {
  command = plan

  # The build firewall is embedded byte for byte: the script Go tests run is
  # the script the VMs run.
  assert {
    condition     = [for f in yamldecode(google_compute_region_instance_template.runner[0].metadata["user-data"]).write_files : f.content if f.path == "/etc/kgd/build-firewall.sh"] == [file("runner/build-firewall.sh")]
    error_message = "cloud-init must write runner/build-firewall.sh unchanged to /etc/kgd/build-firewall.sh"
  }
  assert {
    condition     = startswith(google_compute_region_instance_template.runner[0].metadata["user-data"], "#cloud-config\n")
    error_message = "user-data must be a #cloud-config"
  }
  assert {
    condition     = alltrue([for s in ["-d 169.254.169.254 -j REJECT", "-d 169.254.169.254 -p udp --dport 53 -j RETURN", "-d 169.254.169.254 -p tcp --dport 53 -j RETURN", "DOCKER-USER 1 -i \"$bridge\" -j \"$CHAIN\""] : strcontains(one([for f in yamldecode(google_compute_region_instance_template.runner[0].metadata["user-data"]).write_files : f.content if f.path == "/etc/kgd/build-firewall.sh"]), s)])
    error_message = "the build firewall must REJECT 169.254.169.254 except DNS"
  }
  assert {
    condition = toset([for f in yamldecode(google_compute_region_instance_template.runner[0].metadata["user-data"]).write_files : f.path]) == toset([
      "/etc/kgd/build-firewall.sh",
      "/etc/systemd/system/kgd-build-firewall.service",
      "/etc/kgd/runner.env",
      "/etc/systemd/system/kgd-runner.service",
    ])
    error_message = "cloud-init must write the firewall script, the runner's environment and both systemd units"
  }
  assert {
    condition     = alltrue([for s in ["Type=oneshot", "RemainAfterExit=yes", "After=docker.service", "Requires=docker.service", "ExecStart=/bin/sh /etc/kgd/build-firewall.sh docker0 8080"] : strcontains(one([for f in yamldecode(google_compute_region_instance_template.runner[0].metadata["user-data"]).write_files : f.content if f.path == "/etc/systemd/system/kgd-build-firewall.service"]), s)])
    error_message = "kgd-build-firewall.service must be a oneshot after docker running the script"
  }
  assert {
    condition = alltrue([for s in [
      "Requires=kgd-build-firewall.service",
      "Environment=HOME=/home/kgd-runner",
      "docker-credential-gcr configure-docker --registries=us-central1-docker.pkg.dev",
      "--network host",
      "--user 65532:65532",
      "--group-add \"$$(stat -c %%g /var/run/docker.sock)\"",
      "-v /var/run/docker.sock:/var/run/docker.sock",
      "--env-file /etc/kgd/runner.env us-central1-docker.pkg.dev/kgd-test/kgd/runner:test'",
      "ExecStop=/usr/bin/docker stop --time 60 kgd-runner",
      "TimeoutStopSec=90",
      "Restart=always",
    ] : strcontains(one([for f in yamldecode(google_compute_region_instance_template.runner[0].metadata["user-data"]).write_files : f.content if f.path == "/etc/systemd/system/kgd-runner.service"]), s)])
    error_message = "kgd-runner.service must run the image on the host network as 65532 with the docker socket, after the build firewall, and give it 60 s to hand its job back"
  }
  assert {
    condition     = yamldecode(google_compute_region_instance_template.runner[0].metadata["user-data"]).runcmd == ["systemctl daemon-reload", "systemctl start kgd-build-firewall.service kgd-runner.service"]
    error_message = "cloud-init must start the units"
  }
}

run "runner_env" {
  command = plan

  assert {
    condition = toset(split("\n", trimsuffix(one([for f in yamldecode(google_compute_region_instance_template.runner[0].metadata["user-data"]).write_files : f.content if f.path == "/etc/kgd/runner.env"]), "\n"))) == toset([
      "GOOGLE_CLOUD_PROJECT=kgd-test",
      "KGD_ENCRYPTION_KEY_SECRET=projects/kgd-test/secrets/kgd-encryption-key/versions/latest",
      "KGD_JOBS_SUBSCRIPTION=kgd-runner",
      "KGD_JOBS_TOPIC=kgd-jobs",
      "GITHUB_WEB_URL=https://github.com/",
      "KGD_RUNNER_CONCURRENCY=2",
      "KGD_HEALTH_PORT=8080",
      "KGD_LISTEN_HOST=0.0.0.0",
      "KGD_WORKDIR=/tmp",
      "KGD_RETENTION=720h",
      "KGD_EVENTS_TOPIC=kgd-events",
      "GITHUB_API_URL=https://api.github.com/",
      "KGD_KUBE_ENDPOINT=https://10.0.0.1",
      "KGD_KUBE_CA_DATA=Q0E=",
    ])
    error_message = "the runner's environment (GKE mode) must be exactly the expected VAR=value lines"
  }
  # No secret values: only Secret Manager names.
  assert {
    condition     = length(regexall("(?m)^(KGD_ENCRYPTION_KEY|GITHUB_CLIENT_SECRET|KUBECONFIG)=", one([for f in yamldecode(google_compute_region_instance_template.runner[0].metadata["user-data"]).write_files : f.content if f.path == "/etc/kgd/runner.env"]))) == 0
    error_message = "the runner's environment must not carry secret values"
  }
  assert {
    condition     = alltrue([for l in split("\n", trimsuffix(one([for f in yamldecode(google_compute_region_instance_template.runner[0].metadata["user-data"]).write_files : f.content if f.path == "/etc/kgd/runner.env"]), "\n")) : can(regex("^[A-Z][A-Z0-9_]*=[^\\s\"']+$", l))])
    error_message = "runner.env must be docker --env-file lines: VAR=value, no quotes or spaces"
  }
}

run "event_sinks" {
  command = plan
  variables {
    event_webhook_url        = "https://hooks.example.com/kgd"
    event_webhook_key_secret = "kgd-sink-key"
    event_grpc_target        = "events.example.com:443"
    event_grpc_token_secret  = "projects/other/secrets/kgd-sink-token"
  }

  assert {
    condition = toset([for l in split("\n", trimsuffix(one([for f in yamldecode(google_compute_region_instance_template.runner[0].metadata["user-data"]).write_files : f.content if f.path == "/etc/kgd/runner.env"]), "\n")) : l if startswith(l, "KGD_SINK_")]) == toset([
      "KGD_SINK_WEBHOOK_URL=https://hooks.example.com/kgd",
      "KGD_SINK_WEBHOOK_KEY_SECRET=projects/kgd-test/secrets/kgd-sink-key/versions/latest",
      "KGD_SINK_GRPC_TARGET=events.example.com:443",
      "KGD_SINK_GRPC_TOKEN_SECRET=projects/other/secrets/kgd-sink-token/versions/latest",
    ])
    error_message = "the sinks reach the runner's environment as addresses and Secret Manager names"
  }
  assert {
    condition     = toset(keys(google_secret_manager_secret_iam_member.runner)) == toset(["encryption_key", "webhook_key", "grpc_token"]) && google_secret_manager_secret_iam_member.runner["grpc_token"].secret_id == "projects/other/secrets/kgd-sink-token"
    error_message = "the runner reads the sinks' secrets, and only them besides the encryption key"
  }
}

run "webhook_sink_needs_a_key" {
  command = plan
  variables {
    event_webhook_url = "https://hooks.example.com/kgd"
  }
  expect_failures = [google_compute_region_instance_template.runner]
}

run "webhook_sink_https_only" {
  command = plan
  variables {
    event_webhook_url        = "http://hooks.example.com/kgd"
    event_webhook_key_secret = "k"
  }
  expect_failures = [var.event_webhook_url]
}

run "runner_iam_gke" {
  command = plan

  assert {
    condition     = toset(keys(google_project_iam_member.runner)) == toset(["roles/datastore.user", "roles/logging.logWriter", "roles/monitoring.metricWriter", "roles/container.clusterViewer"])
    error_message = "with GKE the runner's project roles are exactly datastore.user, logging.logWriter, monitoring.metricWriter and container.clusterViewer"
  }
  assert {
    condition     = keys(google_secret_manager_secret_iam_member.runner) == ["encryption_key"]
    error_message = "with GKE the runner reads only the encryption key"
  }
  assert {
    condition     = google_pubsub_subscription_iam_member.runner[0].role == "roles/pubsub.subscriber" && google_pubsub_topic_iam_member.runner_publish[0].role == "roles/pubsub.publisher"
    error_message = "the runner pulls from kgd-runner and re-publishes jobs of dead runners"
  }
  assert {
    condition     = google_pubsub_topic.events.name == "kgd-events" && google_pubsub_topic_iam_member.runner_events[0].role == "roles/pubsub.publisher" && google_pubsub_topic_iam_member.runner_events[0].member == google_service_account.runner[0].member
    error_message = "the runner publishes events to kgd-events"
  }
  assert {
    condition     = google_artifact_registry_repository_iam_member.runner_apps[0].repository == "kgd-apps" && google_artifact_registry_repository_iam_member.runner_apps[0].role == "roles/artifactregistry.writer"
    error_message = "the runner pushes applications' images to kgd-apps"
  }
  assert {
    condition     = google_artifact_registry_repository_iam_member.runner_images[0].repository == "kgd" && google_artifact_registry_repository_iam_member.runner_images[0].role == "roles/artifactregistry.reader"
    error_message = "the runner may only pull from the service-images repository kgd (never overwrite its own image)"
  }
  assert {
    condition = [for b in [
      google_artifact_registry_repository_iam_member.runner_apps[0],
      google_artifact_registry_repository_iam_member.runner_images[0],
    ] : b.repository if b.role == "roles/artifactregistry.writer"] == ["kgd-apps"]
    error_message = "kgd-apps is the only repository the runner may write to"
  }
  assert {
    condition     = data.google_container_cluster.target[0].name == "prod" && data.google_container_cluster.target[0].location == "us-central1"
    error_message = "the runner deploys to gke_cluster_name in gke_cluster_location"
  }
  assert {
    condition     = output.apps_repository == "us-central1-docker.pkg.dev/kgd-test/kgd-apps" && output.runner_service_account == "kgd-runner@kgd-test.iam.gserviceaccount.com"
    error_message = "outputs apps_repository and runner_service_account"
  }
}

run "kubeconfig_mode" {
  command = plan
  variables {
    gke_cluster_name  = ""
    kubeconfig_secret = "other-cluster-kubeconfig"
  }

  assert {
    condition     = strcontains(one([for f in yamldecode(google_compute_region_instance_template.runner[0].metadata["user-data"]).write_files : f.content if f.path == "/etc/kgd/runner.env"]), "\nKGD_KUBECONFIG_SECRET=projects/kgd-test/secrets/other-cluster-kubeconfig/versions/latest\n")
    error_message = "the runner must get the kubeconfig secret's version name"
  }
  assert {
    condition     = !strcontains(one([for f in yamldecode(google_compute_region_instance_template.runner[0].metadata["user-data"]).write_files : f.content if f.path == "/etc/kgd/runner.env"]), "KGD_KUBE_ENDPOINT")
    error_message = "no GKE endpoint in kubeconfig mode"
  }
  assert {
    condition     = keys(google_secret_manager_secret_iam_member.runner) == ["encryption_key", "kubeconfig"] && google_secret_manager_secret_iam_member.runner["kubeconfig"].secret_id == "projects/kgd-test/secrets/other-cluster-kubeconfig" && google_secret_manager_secret_iam_member.runner["kubeconfig"].role == "roles/secretmanager.secretAccessor"
    error_message = "the runner may read the kubeconfig secret (and the encryption key), nothing else"
  }
  assert {
    condition     = toset(keys(google_project_iam_member.runner)) == toset(["roles/datastore.user", "roles/logging.logWriter", "roles/monitoring.metricWriter"])
    error_message = "without GKE the runner's project roles are exactly datastore.user, logging.logWriter and monitoring.metricWriter"
  }
  assert {
    condition     = length(data.google_container_cluster.target) == 0
    error_message = "no GKE cluster is read in kubeconfig mode"
  }
}

run "needs_a_cluster" {
  command = plan
  variables {
    gke_cluster_name = ""
  }
  expect_failures = [google_compute_region_instance_template.runner]
}

run "needs_only_one_cluster" {
  command = plan
  variables {
    kubeconfig_secret = "other-cluster-kubeconfig"
  }
  expect_failures = [google_compute_region_instance_template.runner]
}

run "min_above_max" {
  command = plan
  variables {
    runner_min_replicas = 5
    runner_max_replicas = 2
  }
  expect_failures = [google_compute_region_instance_template.runner]
}

run "negative_min" {
  command = plan
  variables {
    runner_min_replicas = -1
  }
  expect_failures = [var.runner_min_replicas]
}

run "no_runner_without_image" {
  command = plan
  variables {
    runner_image     = ""
    gke_cluster_name = ""
  }
  assert {
    condition = (length(google_service_account.runner) + length(google_project_iam_member.runner) + length(google_pubsub_subscription_iam_member.runner)
      + length(google_pubsub_topic_iam_member.runner_publish) + length(google_pubsub_topic_iam_member.runner_events) + length(google_secret_manager_secret_iam_member.runner) + length(google_artifact_registry_repository.apps)
      + length(google_artifact_registry_repository_iam_member.runner_apps) + length(google_artifact_registry_repository_iam_member.runner_images)
      + length(google_compute_region_instance_template.runner) + length(google_compute_region_instance_group_manager.runner) + length(google_compute_region_autoscaler.runner)
    + length(google_compute_health_check.runner) + length(google_compute_firewall.runner_health) + length(data.google_container_cluster.target)) == 0
    error_message = "without runner_image no runner resource is planned"
  }
  assert {
    condition     = output.runner_service_account == "" && output.apps_repository == ""
    error_message = "without runner_image the runner outputs are empty"
  }
}
