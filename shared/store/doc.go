// Package store persists kube-git-deploy's records in Cloud Firestore:
// tracked repositories, OAuth tokens, jobs and their leases, the Skaffold
// event stream and the latest Skaffold state of each repository. It maps
// Firestore status codes to the sentinel errors declared here (ErrNotFound,
// ErrAlreadyExists, ...), so callers never look at gRPC codes, and it seals
// webhook secrets and tokens with a secret.Box before they reach Firestore.
//
// # Document layout
//
// The layout is shaped by Firestore's limits: about one sustained write per
// second per document, 1 MiB per document, 500 writes per commit, and
// listeners that fall behind when one watched query receives many writes per
// second. Hot data is therefore never written to a shared document: each job
// owns its job document and its event chunks, and each repository's state is
// rate-limited by JobWriter.
//
//	collection    doc id                  fields                                          written by              how often
//	------------  ----------------------  ----------------------------------------------  ----------------------  ------------------------------
//	repositories  owner~name, lowercase   owner, name (display case), hook_id,            PrivateAPI (track,      on track, untrack, trigger or
//	              (GitHub names are case  webhook_secret (sealed), tracked_by,            untrack, triggers,      policy change; once per job
//	              insensitive)            tracked_by_caller, tracked_at, policy{…},       policy); ClaimJob;      started; once per successful
//	                                      triggers{auto_build, auto_deploy, auto_sync},   Execute (control.go);   job (deployed)
//	                                      next_iteration, latest_job_id,                  runner (RecordDeployed)
//	                                      pending_deploy_job_id, deployed{unit: sha},
//	                                      github_reports_off (PrivateAPI reports)
//	tokens        TokenKey: sha256 of     caller, login, token (sealed), scopes,          OAuth callback          once per sign-in
//	              the caller ~ login      created_at
//	jobs          "p-"+PushKey (a push),  repo, owner, name, ref, sha, before,            CreateJob (one Create), create; publish; claim; lease
//	              "d-"+hash of the        delivery_id, pushed_at, trigger, iteration      MarkJobPublished,       renewal every lease/3; finish
//	              delivery, or random     (set by the first claim), status, created_at,   runner (ClaimJob,
//	                                      started_at, finished_at, finished_by,           RenewLease, FinishJob),
//	                                      lease_owner, lease_expires, attempts, error,    Execute (control.go),
//	                                      published, published_at, message_id,            MarkDeployPending
//	              "r-"+random (a job      force_deploy, deploy_of, images,                RecordJobResult (once
//	              someone asked for:      deploy_pending, actor, source_job, units,       before finishing),
//	              rerun, deploy,          phases[{name, status, started_at,               CreateRequestedJob
//	              rollback)               finished_at}], expire_at (TTL)                  (the job API)
//	events        {job id}-{chunk:08d}    repo, job_id, iteration, chunk, created         JobWriter (runner)      one document per chunk of up
//	                                      (server time), v1 [bytes] (v1pb.LogEntry),                              to 100 events, at most one per
//	                                      v2 [bytes] (v2pb.Event), v1_seq, v2_seq,                                FlushInterval (250 ms) per job,
//	                                      seq_first, seq_last, expire_at (TTL)                                    once per OutputInterval (1 s)
//	                                                                                                              for build output alone
//	sequences     repository key          next: the repository's next event sequence      AppendEvents            once per events chunk, in the
//	                                      number                                                                  chunk's transaction
//	states        repository key          job_id, iteration, v1 (bytes, v1pb.State),      JobWriter (runner)      at most once per StateInterval
//	                                      v2 (bytes, v2pb.State), updated (server                                 (1 s) per running job, only
//	                                                                                                              when it changed
//	                                      time), version (write counter)
//	redeliveries  owner~name~guid~N       claimed_by, claimed_at, expire_at (TTL,         runner (redeliver)      once per redelivery attempt
//	                                      7 days)
//	deliveries    (no longer written: a job's id is its push's identity; old documents expire by their TTL)
//
// Sealed fields are secret.Box values whose additional data is the
// document's path and the field name ("repositories/alice~app#webhook_secret"),
// so a sealed value copied into another document does not open there.
//
// Untracking deletes only the repositories document: jobs, events, states and
// deliveries stay, so history remains readable and iterations continue where
// they left off when the repository is tracked again.
//
// # Events
//
// An events document holds a batch of events, not one: a build printing
// 10,000 lines costs about a hundred writes. Its id is deterministic, so an
// append retried by a runner that lost its lease fails with ErrAlreadyExists
// instead of duplicating events. Chunks of one job are written one after the
// other, so their created timestamps increase with chunk. Readers use:
//
//   - the whole stream: events ordered by created (single-field index,
//     automatic);
//   - one repository: events where repo == key ordered by created; this needs
//     the composite index (repo ASC, created ASC);
//   - one job: events where job_id == id, sorted by chunk in memory
//     (single-field index, automatic).
//
// created increases monotonically, which caps the collection at about 500
// writes per second in production (Firestore's sequential index limit); at
// four chunks per second per running job that is far above our load.
//
// # Indexes and policies
//
// Composite indexes the queries of this package (and the API's listeners)
// need in production; the emulator needs none:
//
//	collection  fields                                 used by
//	jobs        repo ASC, iteration DESC               Jobs, TrackRepository (continuing iterations)
//	jobs        repo ASC, created_at DESC              Jobs, JobsPage (then __name__ DESC, implied)
//	jobs        status ASC, lease_expires ASC          ExpiredJobs
//	events      repo ASC, created ASC                  listening to one repository's events
//
// TTL policies on deliveries.expire_at and pushes.expire_at remove delivery
// and push records after seven days, which is longer than GitHub ever
// redelivers (a replay older than that is caught by the runner, which
// builds a push only while its ref still points at its commit).
//
// # Leases
//
// Jobs are delivered at least once. A runner calls ClaimJob before working
// on a job; the claim is a lease that it extends with RenewLease and ends
// with FinishJob. A job whose lease expired (the runner died) can be claimed
// by another runner, which continues its events at JobHistory.NextChunk.
// Time is always passed in (the now arguments, WithClock), never read by the
// lease logic itself.
//
// # Transactions
//
// Transactions read at most three documents and write at most four, and never
// span slow work: the Firestore emulator holds pessimistic locks and aborts a
// waiter after about two seconds, and production Firestore aborts on
// contention. Aborted transactions are retried by the Firestore client.
package store
