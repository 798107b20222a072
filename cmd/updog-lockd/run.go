package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/pflag"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/updog/updog/internal/cli"
	"github.com/updog/updog/lockd"
)

const (
	prog          = "updog-lockd"
	defaultListen = "127.0.0.1:8787"
	synopsis      = "--etcd-endpoints URLS [--listen ADDR] [--slots N] [--group-slots G=N,...] [--etcd-prefix PREFIX] [--request-timeout D]"
	// shutdownGrace bounds how long requests in flight may take after
	// SIGTERM.
	shutdownGrace = 10 * time.Second
)

type options struct {
	endpoints      string
	listen         string
	slots          int
	groupSlots     map[string]int
	prefix         string
	requestTimeout time.Duration
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet(prog, pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	help := fs.BoolP("help", "h", false, "show this help")
	var o options
	fs.StringVar(&o.endpoints, "etcd-endpoints", "", "etcd client URLs, comma-separated (required)")
	fs.StringVar(&o.listen, "listen", defaultListen, "address to serve the FleetLock protocol on")
	fs.IntVar(&o.slots, "slots", 1, fmt.Sprintf("slots per group (1-%d)", lockd.MaxSlots))
	fs.StringToIntVar(&o.groupSlots, "group-slots", nil, "slot counts for named groups, e.g. canary=1,workers=3")
	fs.StringVar(&o.prefix, "etcd-prefix", lockd.DefaultPrefix, "key prefix in etcd")
	fs.DurationVar(&o.requestTimeout, "request-timeout", lockd.DefaultRequestTimeout, "bound on the etcd work of one request")
	var err error
	switch perr := fs.Parse(args); {
	case perr != nil:
		err = cli.Usagef("%v (see %s --help)", perr, prog)
	case *help:
		fmt.Fprintf(stdout, "Usage: %s %s\n\nServes the FleetLock protocol with its state in etcd.\n\nOptions:\n", prog, synopsis)
		fs.SetOutput(stdout)
		fs.PrintDefaults()
		fmt.Fprint(stdout, "\nExit status: 0 stopped by SIGINT or SIGTERM, 1 error, 2 usage error.\n")
		return cli.ExitOK
	case fs.NArg() != 0:
		err = cli.Usagef("unexpected argument %q (see %s --help)", fs.Arg(0), prog)
	default:
		err = serve(ctx, o, stderr)
	}
	var ue *cli.UsageError
	switch {
	case err == nil:
		return cli.ExitOK
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "%s: %v\n", prog, err)
		return cli.ExitUsage
	default:
		fmt.Fprintf(stderr, "%s: %v\n", prog, err)
		return cli.ExitFailure
	}
}

func serve(ctx context.Context, o options, stderr io.Writer) error {
	var endpoints []string
	for _, e := range strings.Split(o.endpoints, ",") {
		if e = strings.TrimSpace(e); e != "" {
			endpoints = append(endpoints, e)
		}
	}
	if len(endpoints) == 0 {
		return cli.Usagef("--etcd-endpoints is required (e.g. http://127.0.0.1:2379)")
	}
	if o.slots < 1 || o.slots > lockd.MaxSlots {
		return cli.Usagef("--slots %d: want 1 to %d", o.slots, lockd.MaxSlots)
	}
	if o.requestTimeout <= 0 {
		return cli.Usagef("--request-timeout %v: want more than 0", o.requestTimeout)
	}
	if _, _, err := net.SplitHostPort(o.listen); err != nil {
		return cli.Usagef("--listen %q: %v", o.listen, err)
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	etcd, err := clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: o.requestTimeout,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		return cli.Usagef("--etcd-endpoints %q: %v", o.endpoints, err)
	}
	defer etcd.Close()
	srv, err := lockd.New(lockd.Config{
		KV:             etcd,
		Prefix:         o.prefix,
		Slots:          o.slots,
		GroupSlots:     o.groupSlots,
		RequestTimeout: o.requestTimeout,
		Logger:         log,
	})
	if err != nil {
		if errors.Is(err, lockd.ErrInvalid) {
			return cli.Usagef("%v", err)
		}
		return err
	}
	l, err := net.Listen("tcp", o.listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", o.listen, err)
	}
	hs := &http.Server{
		Handler:           srv,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      o.requestTimeout + 30*time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	log.Info("serving FleetLock", "listen", l.Addr().String(), "etcd", endpoints, "prefix", o.prefix, "slots", o.slots, "group_slots", o.groupSlots)
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(l) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serving on %s: %w", o.listen, err)
	case <-ctx.Done():
	}
	log.Info("stopping", "reason", context.Cause(ctx))
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		return fmt.Errorf("stopping: %w", err)
	}
	return nil
}
