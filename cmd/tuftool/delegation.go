package main

import (
	"fmt"
	"strings"

	"github.com/spf13/pflag"
	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/updog/updog/internal/cli"
	"github.com/updog/updog/internal/safefile"
	"github.com/updog/updog/repo"
	"github.com/updog/updog/signing"
)

const delegationUsage = `Usage: tuftool delegation --signing-role ROLE COMMAND [options]

Commands (each writes signed role metadata into --outdir, the "incoming
metadata" that the repository owner publishes with
tuftool update ... --incoming-metadata OUTDIR):

  create-role                 a new, empty role ROLE signed by its own keys
                              -k KEY... --outdir DIR [--expires T] [--version N]
  add-role                    ROLE delegates to a role made by create-role
                              --delegated-role NAME --incoming-metadata DIR
                              (--paths P... | --path-hash-prefixes H...)
                              [--threshold N] [--terminating] [--delegated-key FILE...]
  add-key                     list more keys for a role ROLE delegates to
                              --delegated-role NAME --new-key FILE...
  remove-key                  unlist a key of a role ROLE delegates to
                              --delegated-role NAME --keyid ID
  remove-role                 ROLE stops delegating to a role
                              --delegated-role NAME
  update-delegated-targets    add the files of a directory to ROLE's targets
                              --add-targets DIR [--target-prefix DIR/]

All but create-role read the published repository: --root ROOT.json (its
newest root) --metadata-url URL|DIR, and sign ROLE with -k/--key-command
(its keys) into --outdir DIR, with [--expires T] [--version N].
`

// delegationFlags are the options every delegation command shares.
type delegationFlags struct {
	role, outdir, rootPath, metaURL, expires string
	version                                  int64
	keys                                     keyFlags
}

func (d *delegationFlags) register(fs *pflag.FlagSet, repoAccess bool) {
	fs.StringVar(&d.role, "signing-role", d.role, "the role to sign (targets or a delegated role)")
	fs.StringVar(&d.outdir, "outdir", "", "directory for the incoming metadata (required)")
	fs.StringVar(&d.expires, "expires", "", "expiry of the signed role: RFC 3339 or \"in 2 weeks\" (default 2 weeks)")
	fs.Int64Var(&d.version, "version", 0, "version of the signed role (default: the published version + 1, or 1)")
	d.keys.register(fs)
	if repoAccess {
		fs.StringVar(&d.rootPath, "root", "", "the repository's newest root.json (required)")
		fs.StringVar(&d.metaURL, "metadata-url", "", "the published metadata: a URL or a local REPO/metadata (required)")
	}
}

func (d *delegationFlags) edit(e *env) (repo.RoleEdit, error) {
	signers, err := d.keys.signers()
	if err != nil {
		return repo.RoleEdit{}, err
	}
	if len(signers) == 0 {
		return repo.RoleEdit{}, usagef("delegation: -k or --key-command is needed to sign %s", d.role)
	}
	if d.version < 0 {
		return repo.RoleEdit{}, usagef("--version %d: a version is a positive number", d.version)
	}
	re := repo.RoleEdit{Signers: signers, Version: d.version, Now: e.now, Fetcher: e.fetcher()}
	if d.expires != "" {
		t, err := parseWhen(d.expires, e.now())
		if err != nil {
			return re, err
		}
		re.Expires = t
	}
	return re, nil
}

func (d *delegationFlags) published(e *env) (*repo.Published, error) {
	if d.rootPath == "" || d.metaURL == "" {
		return nil, usagef("delegation: --root and --metadata-url are required")
	}
	root, err := repo.LoadRoot(d.rootPath)
	if err != nil {
		return nil, err
	}
	return repo.LoadPublished(e.ctx, root, d.metaURL, e.fetcher().WithContext(e.ctx))
}

func loadKeys(files []string) ([]*metadata.Key, error) {
	var out []*metadata.Key
	for _, f := range files {
		k, err := signing.LoadPublicKey(f)
		if err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, nil
}

func cmdDelegation(e *env, args []string) error {
	var d delegationFlags
	global := pflag.NewFlagSet("delegation", pflag.ContinueOnError)
	global.SetInterspersed(false)
	global.SetOutput(nopWriter{})
	global.StringVar(&d.role, "signing-role", "", "the role to sign")
	help := global.BoolP("help", "h", false, "show this help")
	if err := global.Parse(args); err != nil {
		return usagef("delegation: %v (see tuftool delegation --help)", err)
	}
	if *help || global.NArg() == 0 {
		fmt.Fprint(e.stdout, delegationUsage)
		if *help {
			return errHelp
		}
		return usagef("delegation: a command is needed")
	}
	sub, rest := global.Arg(0), global.Args()[1:]
	name := "delegation " + sub
	fs, parse := flags(name, "--signing-role ROLE [options] (see tuftool delegation --help)", e)
	switch sub {
	case "create-role":
		d.register(fs, false)
		if err := parse(rest, 0); err != nil {
			return err
		}
		if d.role == "" || d.outdir == "" {
			return usagef("%s: --signing-role and --outdir are required", name)
		}
		re, err := d.edit(e)
		if err != nil {
			return err
		}
		in, err := repo.CreateRole(e.ctx, d.role, re)
		if err != nil {
			return err
		}
		return writeIncoming(e, in, d.outdir)
	case "add-role", "add-key", "remove-key", "remove-role", "update-delegated-targets":
	default:
		return usagef("delegation: unknown command %q (see tuftool delegation --help)", sub)
	}
	d.register(fs, true)
	var (
		delegated, incoming, keyID, addTargets, prefix string
		paths, prefixes, delegatedKeys, newKeys        []string
		threshold                                      int
		terminating                                    bool
	)
	switch sub {
	case "add-role":
		fs.StringVar(&delegated, "delegated-role", "", "the role to delegate to (required)")
		fs.StringVar(&incoming, "incoming-metadata", "", "the role's metadata, as create-role wrote it (required)")
		fs.StringArrayVar(&paths, "paths", nil, "target path pattern the role is trusted for (repeatable)")
		fs.StringArrayVar(&prefixes, "path-hash-prefixes", nil, "hex prefix of the SHA-256 of the target paths the role is trusted for (repeatable)")
		fs.IntVar(&threshold, "threshold", 1, "signatures the role needs")
		fs.BoolVar(&terminating, "terminating", false, "a search that reaches the role goes no further")
		fs.StringArrayVar(&delegatedKeys, "delegated-key", nil, "public or private key `FILE` of the role (repeatable; default: the keys create-role listed)")
	case "add-key":
		fs.StringVar(&delegated, "delegated-role", "", "the role (required)")
		fs.StringArrayVar(&newKeys, "new-key", nil, "public or private key `FILE` to list (repeatable, required)")
	case "remove-key":
		fs.StringVar(&delegated, "delegated-role", "", "the role (required)")
		fs.StringVar(&keyID, "keyid", "", "the key id to unlist (required)")
	case "remove-role":
		fs.StringVar(&delegated, "delegated-role", "", "the role to stop delegating to (required)")
	case "update-delegated-targets":
		fs.StringVar(&addTargets, "add-targets", "", "directory whose regular files are added to the role (required)")
		fs.StringVar(&prefix, "target-prefix", "", "directory the targets are named under, ending in / (e.g. team-a/)")
	}
	if err := parse(rest, 0); err != nil {
		return err
	}
	if d.role == "" || d.outdir == "" {
		return usagef("%s: --signing-role and --outdir are required", name)
	}
	if sub != "update-delegated-targets" && delegated == "" {
		return usagef("%s: --delegated-role is required", name)
	}
	re, err := d.edit(e)
	if err != nil {
		return err
	}
	p, err := d.published(e)
	if err != nil {
		return err
	}
	var in *repo.Incoming
	switch sub {
	case "add-role":
		if incoming == "" {
			return usagef("%s: --incoming-metadata is required", name)
		}
		if (len(paths) == 0) == (len(prefixes) == 0) {
			return usagef("%s: give --paths or --path-hash-prefixes (one kind)", name)
		}
		keys, err := loadKeys(delegatedKeys)
		if err != nil {
			return err
		}
		role, err := repo.ReadIncoming(incoming)
		if err != nil {
			return err
		}
		in, err = repo.AddRole(e.ctx, p, d.role, repo.Delegation{Name: delegated, Keys: keys, Threshold: threshold,
			Paths: paths, PathHashPrefixes: prefixes, Terminating: terminating}, role, re)
		if err != nil {
			return err
		}
	case "add-key":
		if len(newKeys) == 0 {
			return usagef("%s: --new-key is required", name)
		}
		keys, err := loadKeys(newKeys)
		if err != nil {
			return err
		}
		if in, err = repo.AddDelegatedKey(e.ctx, p, d.role, delegated, keys, re); err != nil {
			return err
		}
	case "remove-key":
		if keyID == "" {
			return usagef("%s: --keyid is required", name)
		}
		if in, err = repo.RemoveDelegatedKey(e.ctx, p, d.role, delegated, keyID, re); err != nil {
			return err
		}
	case "remove-role":
		if in, err = repo.RemoveRole(e.ctx, p, d.role, delegated, re); err != nil {
			return err
		}
	case "update-delegated-targets":
		if addTargets == "" {
			return usagef("%s: --add-targets is required", name)
		}
		if in, err = repo.UpdateDelegatedTargets(e.ctx, p, d.role, addTargets, prefix, d.outdir, re); err != nil {
			return err
		}
	}
	return writeIncoming(e, in, d.outdir)
}

func writeIncoming(e *env, in *repo.Incoming, outdir string) error {
	if err := in.Write(outdir); err != nil {
		return err
	}
	var roles []string
	for name, md := range in.Roles {
		roles = append(roles, fmt.Sprintf("%s v%d", name, md.Signed.Version))
	}
	fmt.Fprintf(e.stdout, "wrote %s into %s\npublish with: tuftool update ... --incoming-metadata %s\n", strings.Join(roles, ", "), outdir, outdir)
	return nil
}

type nopWriter struct{}

func (nopWriter) Write(p []byte) (int, error) { return len(p), nil }

func cmdExport(e *env, args []string) error {
	fs, parse := flags("export", "--root ROOT.json --metadata-url URL|DIR --targets-url URL|DIR [--target-name NAME...] --out FILE.tar|DIR", e)
	rootPath := fs.String("root", "", "the root the hosts trust (required; hosts must trust this version or a later one)")
	metaURL := fs.String("metadata-url", "", "metadata location: URL or directory (required)")
	targetsURL := fs.String("targets-url", "", "targets location: URL or directory (required)")
	names := fs.StringArray("target-name", nil, "target to carry (repeatable; default: all; manifest.json is always carried when present)")
	out := fs.String("out", "", "the bundle: a .tar file, or a directory that must not exist or be empty (required)")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	if err := parse(args, 0); err != nil {
		return err
	}
	if *rootPath == "" || *metaURL == "" || *targetsURL == "" || *out == "" {
		return usagef("export: --root, --metadata-url, --targets-url and --out are required")
	}
	root, err := safefile.ReadFile(*rootPath, safefile.MaxMetadata)
	if err != nil {
		return err
	}
	res, err := repo.Export(e.ctx, root, *metaURL, *targetsURL, *out, *names, repo.ClientOptions{Now: e.now, Progress: e.progress, Fetcher: e.fetcher().WithContext(e.ctx)})
	if err != nil {
		return err
	}
	return printExport(e, "exported", res, *asJSON)
}

func printExport(e *env, verb string, res *repo.ExportResult, asJSON bool) error {
	if asJSON {
		return cli.WriteJSON(e.stdout, res)
	}
	v := res.Versions
	fmt.Fprintf(e.stdout, "%s %s: root v%d, timestamp v%d, snapshot v%d, targets v%d, %d metadata file(s), %d target(s) (%d copied); expires %s\n",
		verb, res.Out, v.Root, v.Timestamp, v.Snapshot, v.Targets, len(res.Metadata), len(res.Targets), res.Copied, v.Expires.UTC().Format("2006-01-02T15:04:05Z"))
	return nil
}

func cmdMirror(e *env, args []string) error {
	fs, parse := flags("mirror", "--root ROOT.json --metadata-url URL|DIR --targets-url URL|DIR --outdir DIR", e)
	rootPath := fs.String("root", "", "the trusted root (required)")
	metaURL := fs.String("metadata-url", "", "metadata location: URL or directory (required)")
	targetsURL := fs.String("targets-url", "", "targets location: URL or directory (required)")
	outdir := fs.String("outdir", "", "the mirror: DIR/metadata and DIR/targets, created or brought up to date (required)")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	if err := parse(args, 0); err != nil {
		return err
	}
	if *rootPath == "" || *metaURL == "" || *targetsURL == "" || *outdir == "" {
		return usagef("mirror: --root, --metadata-url, --targets-url and --outdir are required")
	}
	root, err := safefile.ReadFile(*rootPath, safefile.MaxMetadata)
	if err != nil {
		return err
	}
	res, err := repo.Mirror(e.ctx, root, *metaURL, *targetsURL, *outdir, repo.ClientOptions{Now: e.now, Progress: e.progress, Fetcher: e.fetcher().WithContext(e.ctx)})
	if err != nil {
		return err
	}
	return printExport(e, "mirrored", res, *asJSON)
}
