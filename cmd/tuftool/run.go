package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/updog/updog/internal/cli"
	"github.com/updog/updog/internal/fetch"
	"github.com/updog/updog/internal/safefile"
	"github.com/updog/updog/repo"
	"github.com/updog/updog/signing"
	"github.com/updog/updog/waves"
)

const (
	exitOK       = cli.ExitOK
	exitError    = cli.ExitFailure
	exitUsage    = cli.ExitUsage
	exitExpiring = 3
)

const usage = `Usage: tuftool COMMAND [options]

Commands:
  gen-key        make a private key (ed25519, ecdsa P-256, rsa >= 3072 bits)
  root           edit and sign root.json: init, add-key, remove-key,
                 set-threshold, expire, bump-version, sign
  create         publish a new repository from a directory of targets
  update         publish a new version of a repository (add targets,
                 re-sign, or --timestamp-only)
  download       verify a repository and download its targets
  check-expiry   report metadata that expires soon
  delegation     delegate targets to other keys: create-role, add-role,
                 add-key, remove-key, remove-role, update-delegated-targets
  export         write a verified offline bundle (a .tar or a directory)
  mirror         keep a verified directory copy of a repository up to date

Run tuftool COMMAND --help for the options of each.
Exit status: 0 success, 1 error, 2 usage error, 3 metadata expires soon.
`

var (
	usagef  = cli.Usagef
	errHelp = cli.ErrHelp
)

type env struct {
	ctx      context.Context
	stdout   io.Writer
	stderr   io.Writer // warnings
	now      func() time.Time
	progress repo.Progress // nil unless stderr is a terminal
	getenv   func(string) string
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer, now func() time.Time) int {
	e := &env{ctx: ctx, stdout: stdout, stderr: stderr, now: now, getenv: os.Getenv}
	if f, ok := stderr.(*os.File); ok {
		if p := cli.NewProgress(f); p != nil {
			e.progress = p
		}
	}
	cmds := map[string]func(*env, []string) error{
		"gen-key": cmdGenKey, "root": cmdRoot, "create": cmdCreate, "update": cmdUpdate,
		"download": cmdDownload, "check-expiry": cmdCheckExpiry,
		"delegation": cmdDelegation, "export": cmdExport, "mirror": cmdMirror,
	}
	return cli.Dispatch("tuftool", usage, args, stdout, stderr, e, cmds)
}

// flags builds a command's flag set; parse handles --help and the number
// of positional arguments.
func flags(name, synopsis string, e *env) (*pflag.FlagSet, func(args []string, nargs int) error) {
	return cli.Flags("tuftool", name, synopsis, e.stdout)
}

// warnf prints a warning on stderr.
func (e *env) warnf(format string, a ...any) {
	fmt.Fprintf(e.stderr, "tuftool: warning: "+format+"\n", a...)
}

// fetcher reads repositories over HTTP through the proxy the environment
// names (HTTPS_PROXY, else HTTP_PROXY, for http and https URLs alike, and
// NO_PROXY), as a publisher's CI expects. Only the commands read the
// environment; the fetch library never does.
func (e *env) fetcher() *fetch.Fetcher {
	first := func(names ...string) string {
		for _, n := range names {
			if v := e.getenv(n); v != "" {
				return v
			}
		}
		return ""
	}
	var noProxy []string
	for _, h := range strings.Split(first("NO_PROXY", "no_proxy"), ",") {
		if h = strings.TrimSpace(h); h != "" {
			noProxy = append(noProxy, h)
		}
	}
	return fetch.NewWith(fetch.Options{
		HTTPSProxy: first("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"),
		NoProxy:    noProxy,
		UserAgent:  "tuftool (updog)",
	})
}

// warnThresholds says at once when a role's threshold is above its key
// count: such a root cannot be signed until keys are added.
func (e *env) warnThresholds(r *repo.Root) {
	var te *repo.ThresholdError
	if err := repo.CheckThresholds(r); errors.As(err, &te) {
		for _, rk := range te.Roles {
			e.warnf("role %s has threshold %d but lists %d key(s): add keys before signing (root sign refuses it without --ignore-threshold)",
				rk.Role, rk.Threshold, rk.Keys)
		}
	}
}

// parseWhen reads an expiry: RFC 3339, or "in 52 weeks" / "in 7 days".
func parseWhen(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t.UTC().Truncate(time.Second), nil
	}
	rest, ok := strings.CutPrefix(strings.TrimSpace(s), "in ")
	if ok {
		if d, err := waves.ParseOffset(rest); err == nil {
			return now.Add(d).UTC().Truncate(time.Second), nil
		}
	}
	return time.Time{}, usagef("%q is not a time: want RFC 3339 (2030-01-01T00:00:00Z) or \"in 52 weeks\"", s)
}

// keyFlags collects -k private key files and --key-command signers.
type keyFlags struct {
	files    []string
	commands []string
	timeout  time.Duration
}

func (k *keyFlags) register(fs *pflag.FlagSet) {
	fs.StringArrayVarP(&k.files, "key", "k", nil, "private key `FILE` (repeatable)")
	fs.StringArrayVar(&k.commands, "key-command", nil, "external signer `PUBKEY=COMMAND`: COMMAND reads the bytes on stdin and prints the signature, at most 64 KiB (repeatable)")
	fs.DurationVar(&k.timeout, "key-command-timeout", signing.DefaultCommandTimeout, "stop a --key-command (and its process group) that runs longer than this")
}

func (k *keyFlags) signers() ([]signing.Signer, error) {
	var out []signing.Signer
	for _, f := range k.files {
		priv, err := signing.LoadPrivateKey(f)
		if err != nil {
			return nil, err
		}
		s, err := signing.NewSigner(priv)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		out = append(out, s)
	}
	for _, c := range k.commands {
		pubFile, command, ok := strings.Cut(c, "=")
		if !ok || strings.TrimSpace(command) == "" {
			return nil, usagef("--key-command %q: want PUBKEY=COMMAND", c)
		}
		pub, err := signing.LoadPublicKey(pubFile)
		if err != nil {
			return nil, err
		}
		if k.timeout <= 0 {
			return nil, usagef("--key-command-timeout %s: want a positive duration", k.timeout)
		}
		out = append(out, &signing.CommandSigner{Public: pub, Argv: strings.Fields(command), Timeout: k.timeout})
	}
	return out, nil
}

func cmdGenKey(e *env, args []string) error {
	fs, parse := flags("gen-key", "--type ed25519|ecdsa|rsa --out FILE", e)
	kt := fs.String("type", "ed25519", "key type: ed25519, ecdsa (P-256) or rsa")
	bits := fs.Int("bits", signing.MinRSABits, "RSA key size in bits (at least 3072)")
	out := fs.String("out", "", "private key `FILE` to create, mode 0600 (required)")
	pubOut := fs.String("public-out", "", "also write the public key (PEM) to this file")
	if err := parse(args, 0); err != nil {
		return err
	}
	if *out == "" {
		return usagef("gen-key: --out is required")
	}
	k, err := signing.Generate(signing.KeyType(*kt), *bits)
	if err != nil {
		return err
	}
	if err := signing.WritePrivateKey(*out, k); err != nil {
		return err
	}
	if *pubOut != "" {
		b, err := signing.MarshalPublicKey(k.Public())
		if err != nil {
			return err
		}
		if err := os.WriteFile(*pubOut, b, repo.PublicFileMode); err != nil {
			return err
		}
		if err := os.Chmod(*pubOut, repo.PublicFileMode); err != nil {
			return err
		}
	}
	tk, err := signing.TUFKey(k.Public())
	if err != nil {
		return err
	}
	id, _ := tk.ID()
	fmt.Fprintf(e.stdout, "%s\n", id)
	return nil
}

func cmdRoot(e *env, args []string) error {
	const rootUsage = `Usage: tuftool root COMMAND ROOT.json [options]

  init ROOT.json [--expires T]
  add-key ROOT.json -k KEYFILE [-k ...] --role ROLE [--role ...]
  remove-key ROOT.json KEYID [--role ROLE]
  set-threshold ROOT.json ROLE N
  expire ROOT.json TIME            (RFC 3339 or "in 52 weeks")
  bump-version ROOT.json
  sign ROOT.json -k KEYFILE [-k ...] [--cross-sign OLD-ROOT.json] [--ignore-threshold]

Every change but sign clears the root's signatures: they signed the old content.
`
	if len(args) == 0 || args[0] == "--help" || args[0] == "-h" {
		fmt.Fprint(e.stdout, rootUsage)
		if len(args) == 0 {
			return usagef("root: a subcommand is needed")
		}
		return errHelp
	}
	sub, args := args[0], args[1:]
	name := "root " + sub
	synopsis := map[string]string{
		"init": "ROOT.json [--expires T]", "add-key": "ROOT.json -k KEYFILE [-k ...] --role ROLE [--role ...]",
		"remove-key": "ROOT.json KEYID [--role ROLE]", "set-threshold": "ROOT.json ROLE N", "expire": "ROOT.json TIME",
		"bump-version": "ROOT.json", "sign": "ROOT.json -k KEYFILE [-k ...] [--cross-sign OLD.json] [--ignore-threshold]",
	}[sub]
	fs, parse := flags(name, synopsis, e)
	edit := func(f func(r *repo.Root) error) error {
		path := fs.Arg(0)
		r, err := repo.LoadRoot(path)
		if err != nil {
			return err
		}
		if err := f(r); err != nil {
			return err
		}
		return repo.WriteRoot(path, r)
	}
	switch sub {
	case "init":
		expires := fs.String("expires", "in 52 weeks", "expiry: RFC 3339 or \"in 52 weeks\"")
		force := fs.Bool("force", false, "replace an existing file")
		if err := parse(args, 1); err != nil {
			return err
		}
		t, err := parseWhen(*expires, e.now())
		if err != nil {
			return err
		}
		if _, err := os.Stat(fs.Arg(0)); err == nil && !*force {
			return fmt.Errorf("%s already exists (use --force to replace it)", fs.Arg(0))
		}
		return repo.WriteRoot(fs.Arg(0), repo.NewRoot(t))
	case "add-key":
		var kf keyFlags
		fs.StringArrayVarP(&kf.files, "key", "k", nil, "private or public key `FILE` (repeatable)")
		roles := fs.StringArray("role", nil, "role to list the key for: root, targets, snapshot, timestamp (repeatable)")
		if err := parse(args, 1); err != nil {
			return err
		}
		if len(kf.files) == 0 || len(*roles) == 0 {
			return usagef("root add-key: -k and --role are required")
		}
		return edit(func(r *repo.Root) error {
			for _, f := range kf.files {
				k, err := signing.LoadPublicKey(f)
				if err != nil {
					return err
				}
				if err := repo.AddKey(r, k, *roles...); err != nil {
					return err
				}
				id, _ := k.ID()
				fmt.Fprintf(e.stdout, "added key %s for %s\n", id, strings.Join(*roles, ", "))
			}
			return nil
		})
	case "remove-key":
		roles := fs.StringArray("role", nil, "only unlist the key from this role (repeatable; default: all)")
		if err := parse(args, 2); err != nil {
			return err
		}
		return edit(func(r *repo.Root) error {
			if err := repo.RemoveKey(r, fs.Arg(1), *roles...); err != nil {
				return err
			}
			e.warnThresholds(r)
			return nil
		})
	case "set-threshold":
		if err := parse(args, 3); err != nil {
			return err
		}
		n, err := strconv.Atoi(fs.Arg(2))
		if err != nil || n < 1 {
			return usagef("root set-threshold: %q is not a number of at least 1", fs.Arg(2))
		}
		return edit(func(r *repo.Root) error {
			if err := repo.SetThreshold(r, fs.Arg(1), n); err != nil {
				return err
			}
			e.warnThresholds(r)
			return nil
		})
	case "expire":
		if err := parse(args, 2); err != nil {
			return err
		}
		t, err := parseWhen(fs.Arg(1), e.now())
		if err != nil {
			return err
		}
		return edit(func(r *repo.Root) error { repo.SetExpires(r, t); return nil })
	case "bump-version":
		if err := parse(args, 1); err != nil {
			return err
		}
		return edit(repo.BumpVersion)
	case "sign":
		var kf keyFlags
		kf.register(fs)
		cross := fs.String("cross-sign", "", "the previous root, for a rotation: the new root must also meet its root threshold")
		partial := fs.Bool("ignore-threshold", false, "write the signature even if the threshold is not met yet (others sign next)")
		if err := parse(args, 1); err != nil {
			return err
		}
		signers, err := kf.signers()
		if err != nil {
			return err
		}
		if len(signers) == 0 {
			return usagef("root sign: at least one -k or --key-command is needed")
		}
		var prev *repo.Root
		if *cross != "" {
			if prev, err = repo.LoadRoot(*cross); err != nil {
				return err
			}
		}
		return edit(func(r *repo.Root) error { return repo.SignRoot(e.ctx, r, prev, signers, *partial) })
	}
	return usagef("root: unknown subcommand %q", sub)
}

// publishFlags are the expiry and version options of create and update.
type publishFlags struct {
	expires  [3]string
	versions [3]int64
}

func (p *publishFlags) register(fs *pflag.FlagSet) {
	for i, role := range []string{"targets", "snapshot", "timestamp"} {
		fs.StringVar(&p.expires[i], role+"-expires", "", role+" expiry: RFC 3339 or \"in 2 weeks\" (default: targets and snapshot 2 weeks, timestamp 1 week)")
		fs.Int64Var(&p.versions[i], role+"-version", 0, role+" version (default: 1, or the published version + 1)")
	}
}

func (p *publishFlags) options(e *env, signers []signing.Signer) (repo.Options, error) {
	for i, role := range []string{"targets", "snapshot", "timestamp"} {
		if p.versions[i] < 0 {
			return repo.Options{}, usagef("--%s-version %d: a version is a positive number", role, p.versions[i])
		}
	}
	o := repo.Options{Signers: signers, Now: e.now, Progress: e.progress, Fetcher: e.fetcher(),
		TargetsVersion: p.versions[0], SnapshotVersion: p.versions[1], TimestampVersion: p.versions[2]}
	for i, dst := range []*time.Time{&o.TargetsExpires, &o.SnapshotExpires, &o.TimestampExpires} {
		if p.expires[i] == "" {
			continue
		}
		t, err := parseWhen(p.expires[i], e.now())
		if err != nil {
			return o, err
		}
		*dst = t
	}
	return o, nil
}

// loadForPublish loads the root, the keys and the options of create and
// update.
func loadForPublish(e *env, rootPath string, kf *keyFlags, pf *publishFlags) (*repo.Root, repo.Options, error) {
	signers, err := kf.signers()
	if err != nil {
		return nil, repo.Options{}, err
	}
	o, err := pf.options(e, signers)
	if err != nil {
		return nil, o, err
	}
	root, err := repo.LoadRoot(rootPath)
	return root, o, err
}

func printResult(e *env, res *repo.Result, asJSON bool) error {
	if asJSON {
		return cli.WriteJSON(e.stdout, res)
	}
	fmt.Fprintf(e.stdout, "published %s: root v%d, targets v%d, snapshot v%d, timestamp v%d, %d target(s)\n",
		res.Dir, res.RootVersion, res.TargetsVersion, res.SnapshotVersion, res.TimestampVersion, res.Targets)
	for _, t := range res.Added {
		fmt.Fprintf(e.stdout, "  added %s (%d bytes, sha256 %s)\n", t.Name, t.Length, t.SHA256)
	}
	return nil
}

func cmdCreate(e *env, args []string) error {
	fs, parse := flags("create", "--root ROOT.json -k KEY... --add-targets DIR --outdir REPO [options]", e)
	rootPath := fs.String("root", "", "signed root.json (required)")
	targets := fs.String("add-targets", "", "directory whose regular files become the targets")
	outdir := fs.String("outdir", "", "where to write the repository; must not exist or be empty (required)")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	var kf keyFlags
	kf.register(fs)
	var pf publishFlags
	pf.register(fs)
	if err := parse(args, 0); err != nil {
		return err
	}
	if *rootPath == "" || *outdir == "" {
		return usagef("create: --root and --outdir are required")
	}
	root, o, err := loadForPublish(e, *rootPath, &kf, &pf)
	if err != nil {
		return err
	}
	res, err := repo.Create(e.ctx, root, *targets, *outdir, o)
	if err != nil {
		return err
	}
	return printResult(e, res, *asJSON)
}

func cmdUpdate(e *env, args []string) error {
	fs, parse := flags("update", "--root ROOT.json -k KEY... --metadata-url URL|DIR [--add-targets DIR] [--incoming-metadata DIR...] [--timestamp-only] --outdir REPO [options]", e)
	rootPath := fs.String("root", "", "signed root.json: the repository's newest root, or its successor to rotate (required)")
	metaURL := fs.String("metadata-url", "", "the published metadata: a URL or a local REPO/metadata directory (required)")
	targets := fs.String("add-targets", "", "directory whose regular files are added or replaced")
	tsOnly := fs.Bool("timestamp-only", false, "only sign a new timestamp (for a cron job)")
	incoming := fs.StringArray("incoming-metadata", nil, "signed roles written by tuftool delegation, to publish (repeatable)")
	outdir := fs.String("outdir", "", "where to write the new repository; must not exist or be empty (required)")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	var kf keyFlags
	kf.register(fs)
	var pf publishFlags
	pf.register(fs)
	if err := parse(args, 0); err != nil {
		return err
	}
	if *rootPath == "" || *metaURL == "" || *outdir == "" {
		return usagef("update: --root, --metadata-url and --outdir are required")
	}
	root, o, err := loadForPublish(e, *rootPath, &kf, &pf)
	if err != nil {
		return err
	}
	for _, dir := range *incoming {
		in, err := repo.ReadIncoming(dir)
		if err != nil {
			return err
		}
		o.Incoming = append(o.Incoming, in)
	}
	res, err := repo.Update(e.ctx, root, *metaURL, *targets, *tsOnly, *outdir, o)
	if err != nil {
		return err
	}
	return printResult(e, res, *asJSON)
}

func cmdDownload(e *env, args []string) error {
	fs, parse := flags("download", "--root ROOT.json --metadata-url URL|DIR --targets-url URL|DIR [--target-name NAME...] OUTDIR", e)
	rootPath := fs.String("root", "", "trusted root.json (required)")
	metaURL := fs.String("metadata-url", "", "metadata location: URL or directory (required)")
	targetsURL := fs.String("targets-url", "", "targets location: URL or directory (required)")
	names := fs.StringArray("target-name", nil, "target to download (repeatable; default: all)")
	asJSON := fs.Bool("json", false, "print what was downloaded as JSON")
	if err := parse(args, 1); err != nil {
		return err
	}
	if *rootPath == "" || *metaURL == "" || *targetsURL == "" {
		return usagef("download: --root, --metadata-url and --targets-url are required")
	}
	root, err := safefile.ReadFile(*rootPath, safefile.MaxMetadata)
	if err != nil {
		return err
	}
	got, err := repo.Download(e.ctx, root, *metaURL, *targetsURL, *names, fs.Arg(0), repo.DownloadOptions{Now: e.now, Progress: e.progress, Fetcher: e.fetcher().WithContext(e.ctx)})
	if err != nil {
		return err
	}
	if *asJSON {
		return cli.WriteJSON(e.stdout, got)
	}
	for _, t := range got {
		fmt.Fprintf(e.stdout, "%s\t%d bytes\tsha256 %s\n", t.Name, t.Length, t.SHA256)
	}
	return nil
}

func cmdCheckExpiry(e *env, args []string) error {
	fs, parse := flags("check-expiry", "--metadata-url URL|DIR --within DURATION", e)
	metaURL := fs.String("metadata-url", "", "metadata location: URL or directory (required)")
	within := fs.String("within", "7 days", "report what expires within this long, e.g. \"3 days\"")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	if err := parse(args, 0); err != nil {
		return err
	}
	if *metaURL == "" {
		return usagef("check-expiry: --metadata-url is required")
	}
	// A window that does not fit a time.Duration (about 292 years) holds
	// every expiry there is: it is the longest window, never a
	// wrapped-around one (issue 8: such a window said "ok").
	d, err := waves.ParseOffset(*within)
	if errors.Is(err, waves.ErrOffsetTooLong) {
		d, err = time.Duration(math.MaxInt64), nil
	}
	if err != nil {
		return usagef("check-expiry: --within: %s", err)
	}
	if d < 0 {
		return usagef("check-expiry: --within %q is out of range", *within)
	}
	ex, err := repo.CheckExpiry(e.ctx, *metaURL, d, e.now(), e.fetcher())
	if err != nil {
		return err
	}
	soon := false
	for _, x := range ex {
		soon = soon || x.Soon
	}
	if *asJSON {
		if err := cli.WriteJSON(e.stdout, ex); err != nil {
			return err
		}
	} else {
		tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ROLE\tVERSION\tEXPIRES\tSTATUS")
		for _, x := range ex {
			status := "ok"
			switch {
			case x.Expired:
				status = "EXPIRED"
			case x.Soon:
				status = "expires within " + *within
			}
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", x.Role, x.Version, x.Expires.UTC().Format(time.RFC3339), status)
		}
		tw.Flush()
	}
	if soon {
		return &cli.ExitError{Code: exitExpiring, Err: errors.New("metadata expires within the window"), Quiet: true}
	}
	return nil
}
