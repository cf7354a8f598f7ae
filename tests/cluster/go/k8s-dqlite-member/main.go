// k8s-dqlite-member: a dqlite member for the machines prototype (tests/cluster/machines).
//
// What microk8s's k8s-dqlite does with dqlite, and nothing else: it keeps its raft data,
// cluster.yaml and info.yaml in --storage-dir, serves on the address in info.yaml (or
// --address on first start, joining --join), and speaks TLS with the cluster.crt and
// cluster.key found there, the same pair on every node (canonical/k8s-dqlite
// pkg/server/server.go: app.WithTLS(app.SimpleTLSConfig(cert, pool))). So the dqlite CLI
// answers microk8s's own invocation:
//   dqlite -s file://BACKEND/cluster.yaml -c BACKEND/cluster.crt -k BACKEND/cluster.key -f json k8s .cluster
// No kine: the database "k8s" gets kine's table and nothing serves it.
//
// Built from go-dqlite v1.11.5 against Debian's libdqlite 1.11.1 (cgo).
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"time"

	"github.com/canonical/go-dqlite/app"
	"github.com/canonical/go-dqlite/client"
	"golang.org/x/sys/unix"
)

const kineSchema = `CREATE TABLE IF NOT EXISTS kine (id INTEGER PRIMARY KEY AUTOINCREMENT,
 name INTEGER, created INTEGER, deleted INTEGER, create_revision INTEGER, prev_revision INTEGER,
 lease INTEGER, value BLOB, old_value BLOB)`

func main() {
	dir := flag.String("storage-dir", "", "backend directory (cluster.crt, cluster.key, raft data)")
	address := flag.String("address", "", "address to serve on when the directory has no info.yaml")
	join := flag.String("join", "", "comma-separated addresses of existing members (first start only)")
	handover := flag.Duration("handover-timeout", 5*time.Second, "how long a stop may spend handing over")
	flag.Parse()
	log.SetFlags(0)
	if *dir == "" {
		log.Fatal("--storage-dir is required")
	}
	crt, key := filepath.Join(*dir, "cluster.crt"), filepath.Join(*dir, "cluster.key")
	cert, err := tls.LoadX509KeyPair(crt, key)
	if err != nil {
		log.Fatalf("load %s: %v", crt, err)
	}
	data, err := os.ReadFile(crt)
	if err != nil {
		log.Fatalf("read %s: %v", crt, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		log.Fatalf("bad certificate %s", crt)
	}
	var cluster []string
	if *join != "" {
		cluster = strings.Split(*join, ",")
	}
	logf := func(l client.LogLevel, format string, a ...interface{}) {
		if l >= client.LogWarn {
			log.Printf(l.String()+": "+format, a...)
		}
	}
	opts := []app.Option{app.WithTLS(app.SimpleTLSConfig(cert, pool)), app.WithCluster(cluster),
		app.WithLogFunc(logf)}
	if *address != "" {
		opts = append(opts, app.WithAddress(*address))
	}
	a, err := app.New(*dir, opts...)
	if err != nil {
		log.Fatalf("start dqlite: %v", err)
	}
	log.Printf("dqlite member %s (id %d) starting", a.Address(), a.ID())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	if err := a.Ready(ctx); err != nil {
		log.Fatalf("not ready after 60s: %v", err)
	}
	cancel()
	db, err := a.Open(context.Background(), "k8s")
	if err != nil {
		log.Fatalf("open database k8s: %v", err)
	}
	if _, err := db.Exec(kineSchema); err != nil {
		log.Printf("create kine table: %v", err)
	}
	log.Printf("dqlite member %s ready", a.Address())

	ch := make(chan os.Signal, 1)
	signal.Notify(ch, unix.SIGPWR, unix.SIGINT, unix.SIGQUIT, unix.SIGTERM)
	sig := <-ch
	log.Printf("%v: handing over (at most %v)", sig, *handover)
	db.Close()
	ctx, cancel = context.WithTimeout(context.Background(), *handover)
	if err := a.Handover(ctx); err != nil {
		log.Printf("handover: %v", err)
	}
	cancel()
	a.Close()
	log.Printf("stopped")
}
