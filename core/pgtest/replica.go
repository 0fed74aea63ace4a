package pgtest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// Replica timeouts.
const (
	basebackupTimeout = 2 * time.Minute
	streamingTimeout  = 60 * time.Second
	pollInterval      = 20 * time.Millisecond
)

// AddReplica starts a streaming hot standby of s for the test, on its own
// free port and in its own temporary directory, and registers its Stop with
// tb.Cleanup. It returns once the replica is in recovery and its WAL receiver
// is streaming from s, and fails the test through tb.Fatalf otherwise.
func (s *Server) AddReplica(tb testing.TB) *Server {
	tb.Helper()
	r, err := s.StartReplica()
	if err != nil {
		tb.Fatalf("%v", err)
	}
	tb.Cleanup(func() {
		if err := r.Stop(); err != nil {
			tb.Errorf("%v", err)
		}
	})
	return r
}

// StartReplica is AddReplica without testing: the caller owns the returned
// replica and must call its Stop (before stopping s, to avoid the replica
// logging connection failures).
//
// The replica is cloned with pg_basebackup -R over TCP as the superuser, so
// it exercises s's pg_hba.conf replication entry and AuthMethod, and has
// s's Options (its own port and directory aside).
func (s *Server) StartReplica() (*Server, error) {
	return s.StartReplicaAt("", 0)
}

// StartReplicaAt is StartReplica with the replica's data directory and port
// chosen as [Options] DataDir and Port choose them: an empty dataDir means a
// temporary one, a port of zero a free port. A dataDir that already holds a
// cluster must be a standby of s (standby.signal present, the same system
// identifier); it is started as it is, and catches up by streaming. An
// empty or missing one is cloned from s. A given dataDir is kept when the
// replica stops (with a clean fast shutdown), so `make run` finds it again.
func (s *Server) StartReplicaAt(dataDir string, port int) (*Server, error) {
	opts := s.opts
	opts.DataDir = dataDir
	opts.Port = port
	if port < 0 || port > 65535 {
		return nil, fmt.Errorf("pgtest: replica port %d is out of range", port)
	}
	r, err := newServer(s.run, opts)
	if err != nil {
		return nil, err
	}
	reused, err := r.prepareReplicaDir()
	if err != nil {
		return nil, r.abandon(err)
	}
	if !reused {
		if err := r.basebackup(s); err != nil {
			return nil, r.abandon(err)
		}
	}
	if err := r.start(); err != nil {
		return nil, r.abandon(err)
	}
	if reused {
		if err := r.checkStandbyOf(s); err != nil {
			return nil, r.abandon(err)
		}
	}
	if err := r.waitStreaming(); err != nil {
		return nil, r.abandon(err)
	}
	return r, nil
}

// prepareReplicaDir readies a kept data directory: it reports whether it
// already holds a standby (whose pg_hba.conf it rewrites, as for a
// primary), and otherwise leaves it empty and owned by the user that runs
// PostgreSQL for pg_basebackup. A temporary replica needs nothing.
func (s *Server) prepareReplicaDir() (reused bool, err error) {
	if s.opts.DataDir == "" {
		return false, nil
	}
	if _, err := os.Stat(filepath.Join(s.dataDir, "PG_VERSION")); err == nil {
		if _, err := os.Stat(filepath.Join(s.dataDir, "standby.signal")); err != nil {
			return false, fmt.Errorf("pgtest: %s holds a cluster that is not a standby (no standby.signal); remove it to clone a new replica", s.dataDir)
		}
		reused = true
	} else if entries, err := os.ReadDir(s.dataDir); err == nil && len(entries) > 0 {
		return false, fmt.Errorf("pgtest: %s is neither empty nor a data directory; remove it to clone a new replica", s.dataDir)
	} else if err := os.MkdirAll(s.dataDir, 0o700); err != nil {
		return false, fmt.Errorf("pgtest: creating data directory: %w", err)
	}
	if err := s.run.checkReachable(s.dataDir); err != nil {
		return false, err
	}
	if err := s.run.chownTree(s.dataDir); err != nil {
		return false, err
	}
	if err := os.Chmod(s.dataDir, 0o700); err != nil {
		return false, fmt.Errorf("pgtest: %w", err)
	}
	if !reused {
		return false, nil
	}
	if err := s.includeConfig(); err != nil {
		return false, err
	}
	return true, s.run.writeFile(filepath.Join(s.dataDir, "pg_hba.conf"), hbaConfig(s.opts.AuthMethod))
}

// checkStandbyOf fails unless s was cloned from primary's cluster: a kept
// replica of a primary whose data directory was since recreated cannot
// stream from it.
func (s *Server) checkStandbyOf(primary *Server) error {
	ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
	defer cancel()
	mine, err := s.systemIdentifier(ctx)
	if err != nil {
		return err
	}
	theirs, err := primary.systemIdentifier(ctx)
	if err != nil {
		return err
	}
	if mine != theirs {
		return fmt.Errorf("pgtest: %s is a standby of another cluster (system identifier %s, the primary's is %s); remove it to clone a new replica", s.dataDir, mine, theirs)
	}
	return nil
}

// basebackup clones primary into s's data directory and configures it as a
// standby (standby.signal and primary_conninfo).
func (s *Server) basebackup(primary *Server) error {
	var env []string
	if primary.opts.AuthMethod != AuthTrust {
		env = append(env, "PGPASSWORD="+primary.opts.SuperuserPassword)
	}
	err := s.run.run(basebackupTimeout, s.runDir, "pg_basebackup", []string{
		"-D", s.dataDir,
		"-h", Host,
		"-p", strconv.Itoa(primary.port),
		"-U", Superuser,
		"--no-password",
		"--write-recovery-conf",
		"--wal-method=stream",
		"--checkpoint=fast",
		"--no-sync",
	}, env...)
	if err != nil {
		return fmt.Errorf("pgtest: cloning primary on port %d: %w", primary.port, err)
	}
	// The clone carries the primary's pg_hba.conf and pgtest.conf; start
	// rewrites the latter for the replica's port and socket.
	return nil
}

// waitStreaming waits until s is in recovery and its WAL receiver streams.
func (s *Server) waitStreaming() error {
	ctx, cancel := context.WithTimeout(context.Background(), streamingTimeout)
	defer cancel()
	var last string
	for {
		inRecovery, receiver, err := s.recoveryState(ctx)
		switch {
		case err != nil:
			last = err.Error()
		case !inRecovery:
			return fmt.Errorf("pgtest: replica on port %d is not in recovery", s.port)
		case receiver == "streaming":
			return nil
		default:
			last = fmt.Sprintf("WAL receiver status %q", receiver)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("pgtest: replica on port %d not streaming after %v (last: %s)", s.port, streamingTimeout, last)
		case <-time.After(pollInterval):
		}
	}
}

// Promote promotes a replica started by AddReplica or StartReplica to a
// primary with pg_ctl promote and returns once it is out of recovery and
// accepts writes, or when ctx is done.
func (s *Server) Promote(ctx context.Context) error {
	err := s.run.run(pgctlTimeout, s.runDir, "pg_ctl", []string{
		"promote", "-D", s.dataDir, "-w", "-t", strconv.Itoa(pgctlWaitSeconds),
	})
	if err != nil {
		return fmt.Errorf("pgtest: promoting server on port %d: %w", s.port, err)
	}
	for {
		inRecovery, _, err := s.recoveryState(ctx)
		if err == nil && !inRecovery {
			return nil
		}
		select {
		case <-ctx.Done():
			if err == nil {
				err = fmt.Errorf("still in recovery")
			}
			return fmt.Errorf("pgtest: promoting server on port %d: %w (%w)", s.port, ctx.Err(), err)
		case <-time.After(pollInterval):
		}
	}
}
