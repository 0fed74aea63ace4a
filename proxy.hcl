# Sluice configuration used by `make run`. Every key is documented in README.md.

listen "main" {
  address = "127.0.0.1:6432" # the writer endpoint: transactions go to the primary
  cluster = "main"
}

listen "reader" {
  address = "127.0.0.1:6433" # the reader endpoint: transactions go to the replicas
  cluster = "main"
  role    = "reader"
}

pool {
  mode            = "transaction"
  max_connections = 20
  borrow_timeout  = "120s"
}

cluster "main" {
  writer   = "127.0.0.1:15432"   # the primary that `make run` starts
  replicas = ["127.0.0.1:15433"] # and its streaming replica
  # The probes' login (created by `make run`): the replica is probed, so it
  # leaves the reader endpoint while it is down, and a writer found in
  # recovery receives no write.
  monitor_user          = "sluice_monitor"
  monitor_password      = "env:SLUICE_MONITOR_PASSWORD"
  health_check_interval = "1s"
}

auth {
  method = "scram-sha-256"
  user "app" {
    password         = "env:SLUICE_APP_PASSWORD"
    backend_user     = "app"
    backend_password = "env:SLUICE_APP_BACKEND_PASSWORD"
  }
}

admin {
  address = "127.0.0.1:9930" # HTTP: /healthz, /readyz, /metrics, /pools, /sessions
}

log {
  level  = "info"
  format = "console"
}
