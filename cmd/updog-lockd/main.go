// updog-lockd is a FleetLock server whose state lives in etcd: hosts
// running updog (or Zincati) ask it for a reboot slot before they reboot
// into an update, and give it back once the new release is marked good.
//
// Synopsis:
//
//	updog-lockd --etcd-endpoints URLS [--listen ADDR] [--slots N]
//	            [--group-slots GROUP=N,...] [--etcd-prefix PREFIX]
//	            [--request-timeout D]
//
// Description:
//
//	Serves POST /v1/pre-reboot and POST /v1/steady-state (the FleetLock
//	protocol) on --listen. Each group is a counting semaphore of --slots
//	slots (or its --group-slots count), stored in one etcd key under
//	--etcd-prefix and changed only by compare-and-swap transactions, so
//	several updog-lockd processes may serve one fleet and any of them may
//	be killed at any time. Locks are owned and recursive. When etcd does
//	not answer within --request-timeout the answer is 503, never a grant.
//
//	The server speaks plain HTTP and checks no credentials: listen on
//	127.0.0.1 behind a TLS proxy, or on a network only the fleet reaches.
//	SIGINT and SIGTERM stop it cleanly (requests in flight are answered).
//
// Options:
//
//	--etcd-endpoints URLS   etcd client URLs, comma-separated (required),
//	                        e.g. http://127.0.0.1:2379
//	--listen ADDR           address to serve on (default 127.0.0.1:8787)
//	--slots N               slots per group, 1-10000 (default 1)
//	--group-slots G=N,...   slot counts for named groups, overriding --slots
//	--etcd-prefix PREFIX    key prefix in etcd (default /updog-lockd/)
//	--request-timeout D     bound on the etcd work of one request (default 5s)
//
// Exit status: 0 stopped by SIGINT or SIGTERM, 1 error (the address cannot
// be listened on), 2 usage error (a bad flag value).
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}
