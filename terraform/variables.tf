variable "project_id" {
  description = "Google Cloud project to deploy into."
  type        = string
}

variable "region" {
  description = "Region of the functions, the Pub/Sub and Firestore location's region."
  type        = string
  default     = "us-central1"
}

variable "firestore_location" {
  description = "Firestore location (a region or multi-region such as nam5)."
  type        = string
  default     = "nam5"
}

variable "functions_source" {
  description = "Path of the Cloud Functions source bundle (make functions-bundle writes dist/functions.zip)."
  type        = string
  default     = "../dist/functions.zip"
}

variable "go_runtime" {
  description = "Cloud Functions Go runtime; must be at least the go directive of go.mod."
  type        = string
  default     = "go126"
}

variable "github_client_id" {
  description = "GitHub OAuth App client id."
  type        = string
}

variable "github_client_secret" {
  description = "GitHub OAuth App client secret (stored in Secret Manager)."
  type        = string
  sensitive   = true
}

variable "encryption_key" {
  description = "Base64 of 32 random bytes that seal secrets and tokens at rest (openssl rand -base64 32); stored in Secret Manager."
  type        = string
  sensitive   = true

  validation {
    condition     = can(base64decode(var.encryption_key)) && length(base64decode(var.encryption_key)) == 32
    error_message = "encryption_key must be base64 of exactly 32 bytes."
  }
}

variable "github_api_url" {
  description = "GitHub REST API base URL (GitHub Enterprise Server: https://HOST/api/v3/)."
  type        = string
  default     = "https://api.github.com/"
}

variable "github_web_url" {
  description = "GitHub web base URL."
  type        = string
  default     = "https://github.com/"
}

variable "github_private_repos" {
  description = "Request the repo OAuth scope, needed to clone private repositories."
  type        = bool
  default     = false
}

variable "public_url" {
  description = "Base URL GitHub delivers webhooks to. Empty: the PublicAPI function's own URL."
  type        = string
  default     = ""
}

variable "private_url" {
  description = "Base URL users reach PrivateAPI at, for the OAuth callback. Empty: the function's cloudfunctions.net URL."
  type        = string
  default     = ""
}

variable "private_invokers" {
  description = "Principals allowed to call PrivateAPI (e.g. user:alice@example.com, group:deployers@example.com)."
  type        = list(string)
  default     = []
}

variable "max_delivery_attempts" {
  description = "Deliveries of a job message before it moves to the dead-letter topic (5 to 100)."
  type        = number
  default     = 5

  validation {
    condition     = var.max_delivery_attempts >= 5 && var.max_delivery_attempts <= 100
    error_message = "max_delivery_attempts must be between 5 and 100."
  }
}

variable "api_image" {
  description = "Container image of the API service (api/Dockerfile). Empty: the service is not created."
  type        = string
  default     = ""
}

variable "api_invokers" {
  description = "Principals allowed to call the API service (Cloud Run IAM); nobody else can."
  type        = list(string)
  default     = []
}

variable "api_max_instances" {
  description = "Most instances of the API service. Each keeps one Firestore listener per watched scope."
  type        = number
  default     = 5
}
