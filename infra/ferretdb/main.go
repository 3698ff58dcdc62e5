// Command caas-ferretdb runs an embedded FerretDB v1 (MongoDB wire protocol)
// with the SQLite backend, for CAAS integration tests on loopback.
//
// Usage: caas-ferretdb -listen 127.0.0.1:27017 -dir /path/to/data [-log-level warn] [-serialize=true]
//
// FerretDB v1 executes an update as "query, then write" with no lock or transaction
// around the pair, so concurrent updates of the same document lose writes
// (50 concurrent $inc on one document end at ~5). MongoDB makes each single-document
// write atomic. To give tests MongoDB's guarantee, -serialize (the default) puts
// FerretDB behind a small wire-protocol proxy that runs one command at a time,
// server-wide: every command then runs atomically with respect to all others.
package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/FerretDB/FerretDB/ferretdb"
)

const (
	opMsg           = 2013
	flagMoreToCome  = 1 << 1
	maxMessageBytes = 48 * 1024 * 1024
)

func main() {
	listen := flag.String("listen", "127.0.0.1:27017", "TCP address to listen on")
	dir := flag.String("dir", "data", "directory for the SQLite databases (one file per database)")
	level := flag.String("log-level", "warn", "log level: debug, info, warn, error")
	serialize := flag.Bool("serialize", true, "run one command at a time (atomic single-document updates, like MongoDB)")
	durable := flag.Bool("durable", false, "fsync SQLite commits (default: PRAGMA synchronous=OFF, much faster; test data only)")
	flag.Parse()

	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*level)); err != nil {
		fmt.Fprintln(os.Stderr, "bad -log-level:", err)
		os.Exit(2)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))

	abs, err := filepath.Abs(*dir)
	if err != nil {
		logger.Error("bad -dir", "err", err)
		os.Exit(2)
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		logger.Error("cannot create data dir", "err", err)
		os.Exit(1)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	listener := ferretdb.ListenerConfig{TCP: *listen}
	var front net.Listener
	var sock string
	if *serialize {
		// Bind the public port first, so a port clash fails fast; FerretDB itself
		// listens on a private Unix socket behind the proxy.
		if front, err = net.Listen("tcp", *listen); err != nil {
			logger.Error("cannot listen", "addr", *listen, "err", err)
			os.Exit(1)
		}
		tmp, err := os.MkdirTemp("", "caas-ferretdb-")
		if err != nil {
			logger.Error("cannot create socket dir", "err", err)
			os.Exit(1)
		}
		defer os.RemoveAll(tmp)
		sock = filepath.Join(tmp, "ferretdb.sock")
		listener = ferretdb.ListenerConfig{Unix: sock}
	}

	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  listener,
		Logger:    logger,
		Handler:   "sqlite",
		SQLiteURL: sqliteURL(abs, *durable),
	})
	if err != nil {
		logger.Error("cannot start FerretDB", "err", err)
		os.Exit(1)
	}

	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := f.Run(ctx); err != nil {
			logger.Error("FerretDB stopped with error", "err", err)
		}
	}()

	if front != nil {
		go func() {
			<-ctx.Done()
			front.Close()
		}()
		if err := waitForSocket(sock, 30*time.Second); err != nil {
			logger.Error("FerretDB did not open its socket", "err", err)
			os.Exit(1)
		}
		logger.Warn("FerretDB listening (serialized)", "addr", *listen, "dir", abs)
		var mu sync.Mutex // held for one request/response exchange, server-wide
		go (&idIndexer{dir: abs, mu: &mu, logger: logger, seen: map[string]time.Time{}}).run(ctx.Done())
		serve(front, sock, &mu, logger)
	} else {
		go (&idIndexer{dir: abs, logger: logger, seen: map[string]time.Time{}}).run(ctx.Done())
		logger.Warn("FerretDB listening", "addr", *listen, "dir", abs)
	}

	<-done
}

// sqliteURL is FerretDB's SQLite URI for a directory (FerretDB adds busy_timeout, WAL, auto_vacuum).
func sqliteURL(dir string, durable bool) string {
	u := "file:" + dir + "/"
	if !durable {
		u += "?_pragma=synchronous(off)"
	}
	return u
}

func waitForSocket(path string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.Dial("unix", path)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// serve accepts client connections until the listener is closed.
func serve(front net.Listener, sock string, mu *sync.Mutex, logger *slog.Logger) {
	for {
		c, err := front.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			logger.Warn("accept failed", "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		go proxy(c, sock, mu, logger)
	}
}

// proxy relays whole wire-protocol messages between one client and FerretDB,
// holding mu from the moment a request is forwarded until its last reply is relayed.
func proxy(client net.Conn, sock string, mu *sync.Mutex, logger *slog.Logger) {
	defer client.Close()
	backend, err := net.Dial("unix", sock)
	if err != nil {
		logger.Error("cannot reach FerretDB socket", "err", err)
		return
	}
	defer backend.Close()

	cr := bufio.NewReader(client)
	br := bufio.NewReader(backend)
	for {
		req, err := readMessage(cr)
		if err != nil {
			return // client went away (or sent garbage)
		}
		if !exchange(req, backend, br, client, mu) {
			return
		}
	}
}

func exchange(req []byte, backend net.Conn, br *bufio.Reader, client net.Conn, mu *sync.Mutex) bool {
	mu.Lock()
	defer mu.Unlock()
	if _, err := backend.Write(req); err != nil {
		return false
	}
	if moreToCome(req) {
		return true // no reply expected (unacknowledged write)
	}
	for {
		resp, err := readMessage(br)
		if err != nil {
			return false
		}
		if _, err := client.Write(resp); err != nil {
			return false
		}
		if !moreToCome(resp) {
			return true
		}
	}
}

// readMessage reads one length-prefixed MongoDB wire message (header included).
func readMessage(r io.Reader) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.LittleEndian.Uint32(hdr[:])
	if n < 16 || n > maxMessageBytes {
		return nil, fmt.Errorf("bad message length %d", n)
	}
	msg := make([]byte, n)
	copy(msg, hdr[:])
	if _, err := io.ReadFull(r, msg[4:]); err != nil {
		return nil, err
	}
	return msg, nil
}

func moreToCome(msg []byte) bool {
	if len(msg) < 20 || binary.LittleEndian.Uint32(msg[12:16]) != opMsg {
		return false
	}
	return binary.LittleEndian.Uint32(msg[16:20])&flagMoreToCome != 0
}
