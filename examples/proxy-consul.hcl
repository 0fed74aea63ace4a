# Sluice configuration used by `make run-consul`: the cluster's servers come
# from Consul, and Sluice registers itself there. Every key is documented in
# README.md.

listen "main" {
  address = "127.0.0.1:6432" # the writer endpoint
  cluster = "main"
}

listen "reader" {
  address = "127.0.0.1:6433" # the reader endpoint
  cluster = "main"
  role    = "reader"
}

pool {
  mode            = "transaction"
  max_connections = 20
  borrow_timeout  = "120s"
}

cluster "main" {
  consul {
    address     = "127.0.0.1:18500" # the agent `make run-consul` starts
    service     = "postgres-main"   # whose passing instances are the servers
    writer_tag  = "primary"
    replica_tag = "replica"
  }
  # Consul names the writer; the probes only fence it (a writer found in
  # recovery receives no write) and take unreachable replicas out.
  promotion             = "discovery"
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
  address = "127.0.0.1:9930" # HTTP: /healthz (Consul's check), /pools, /sessions
  register {
    service        = "sluice" # one instance per listener, tagged writer or reader
    tags           = ["dev"]
    check_interval = "2s"
  }
}

log {
  level  = "info"
  format = "console"
}
