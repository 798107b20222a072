package verity

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/updog/updog/internal/testutil"
)

var testUUID = [16]byte{0x11, 0x11, 0x11, 0x11, 0x22, 0x22, 0x33, 0x33, 0x44, 0x44, 0x55, 0x55, 0x55, 0x55, 0x55, 0x55}

const testUUIDText = "11111111-2222-3333-4444-555555555555"

func randomFile(t testing.TB, dir string, size int64, seed uint64) string {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 7))
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	p := filepath.Join(dir, fmt.Sprintf("data-%d-%d", size, seed))
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// ours formats data into a new hash file with our code.
func ours(t testing.TB, data, hash string, p Params) *Tree {
	t.Helper()
	d, err := os.Open(data)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	fi, _ := d.Stat()
	h, err := os.Create(hash)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	tr, err := Format(context.Background(), d, fi.Size(), h, p)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func veritysetupArgs(p Params) []string {
	args := []string{"--hash", p.Hash, "--data-block-size", strconv.Itoa(p.DataBlockSize),
		"--hash-block-size", strconv.Itoa(p.HashBlockSize), "--hash-offset", strconv.FormatInt(p.HashOffset, 10)}
	if len(p.Salt) == 0 {
		args = append(args, "--salt", "-")
	} else {
		args = append(args, "--salt", hex.EncodeToString(p.Salt))
	}
	if p.NoSuperblock {
		args = append(args, "--no-superblock")
	}
	if p.DataBlocks != 0 {
		args = append(args, "--data-blocks", strconv.FormatUint(p.DataBlocks, 10))
	}
	return args
}

var rootRE = regexp.MustCompile(`Root hash:\s+([0-9a-f]+)`)

func theirs(t testing.TB, vs, data, hash string, p Params) string {
	t.Helper()
	args := append([]string{"format", "--uuid", testUUIDText}, veritysetupArgs(p)...)
	out := testutil.Run(t, vs, append(args, data, hash)...)
	m := rootRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no root hash in veritysetup output:\n%s", out)
	}
	return m[1]
}

func theirVerify(vs, data, hash, root string, p Params) (string, error) {
	args := []string{"verify"}
	if p.NoSuperblock {
		args = append(args, veritysetupArgs(p)...)
	} else {
		args = append(args, "--hash-offset", strconv.FormatInt(p.HashOffset, 10))
	}
	out, err := exec.Command(vs, append(args, data, hash, root)...).CombinedOutput()
	return string(out), err
}

func ourVerify(t testing.TB, data, hash string, p Params, root string) error {
	t.Helper()
	d, _ := os.Open(data)
	defer d.Close()
	h, _ := os.Open(hash)
	defer h.Close()
	fi, _ := d.Stat()
	if !p.NoSuperblock {
		sb, err := ReadSuperblock(h, p.HashOffset)
		if err != nil {
			return err
		}
		p = sb.Params(p.HashOffset)
	}
	rh, err := ParseRootHash(root, p.Hash)
	if err != nil {
		t.Fatal(err)
	}
	err = Verify(context.Background(), d, fi.Size(), h, p, rh)
	// VerifyStream names the same block as Verify, so as veritysetup.
	if serr := VerifyStream(context.Background(), d, fi.Size(), h, p, rh); !sameError(serr, err) {
		t.Errorf("VerifyStream says %v, Verify %v", serr, err)
	}
	return err
}

type vcase struct {
	name string
	size int64
	p    Params
}

func cases() []vcase {
	salt32, _ := hex.DecodeString("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
	salt256 := bytes.Repeat([]byte{0xa5, 0x5a}, 128)
	mk := func(alg string, dbs, hbs int, salt []byte) Params {
		return Params{Hash: alg, DataBlockSize: dbs, HashBlockSize: hbs, Salt: salt, UUID: testUUID}
	}
	noSB := mk("sha256", 4096, 4096, salt32)
	noSB.NoSuperblock, noSB.HashOffset = true, 8192
	off := mk("sha256", 4096, 4096, salt32)
	off.HashOffset = 1024
	limited := mk("sha256", 4096, 4096, salt32)
	limited.DataBlocks = 100
	return []vcase{
		{"one block", 4096, mk("sha256", 4096, 4096, salt32)},
		{"two blocks and a tail", 10000, mk("sha256", 4096, 4096, salt32)},
		{"1 MiB bottlerocket params", 1 << 20, mk("sha256", 4096, 4096, salt32)},
		{"odd size", 1<<20 + 1234, mk("sha256", 4096, 4096, salt32)},
		{"sha1 512/1024 no salt", 1<<20 + 512*3, mk("sha1", 512, 1024, nil)},
		{"sha512 4096/512 long salt", 3 << 20, mk("sha512", 4096, 512, salt256)},
		{"sha256 512/512", 600 * 1024, mk("sha256", 512, 512, []byte{1})},
		{"3 MiB chunk boundaries", 3<<20 + 4096*5, mk("sha256", 4096, 4096, salt32)},
		{"no superblock at 8192", 1 << 20, noSB},
		{"superblock at 1024", 1 << 20, off},
		{"data blocks limited", 1 << 20, limited},
	}
}

func TestByteIdenticalToVeritysetup(t *testing.T) {
	vs := testutil.Tool(t, "veritysetup")
	dir := t.TempDir()
	for i, c := range cases() {
		t.Run(c.name, func(t *testing.T) {
			data := randomFile(t, dir, c.size, uint64(i))
			mine, want := filepath.Join(dir, fmt.Sprintf("%d.ours", i)), filepath.Join(dir, fmt.Sprintf("%d.theirs", i))
			tr := ours(t, data, mine, c.p)
			root := theirs(t, vs, data, want, c.p)
			if got := hex.EncodeToString(tr.RootHash); got != root {
				t.Fatalf("root hash %s, veritysetup %s", got, root)
			}
			a, _ := os.ReadFile(mine)
			b, _ := os.ReadFile(want)
			if !bytes.Equal(a, b) {
				i := 0
				for i < len(a) && i < len(b) && a[i] == b[i] {
					i++
				}
				t.Fatalf("hash devices differ: ours %d bytes, theirs %d, first difference at %d", len(a), len(b), i)
			}
			if tr.HashDeviceSize != int64(len(b)) {
				t.Errorf("HashDeviceSize %d, file %d", tr.HashDeviceSize, len(b))
			}
			if out, err := theirVerify(vs, data, mine, root, c.p); err != nil {
				t.Fatalf("veritysetup verify rejects ours: %v\n%s", err, out)
			}
			if err := ourVerify(t, data, want, c.p, root); err != nil {
				t.Fatalf("we reject veritysetup's: %v", err)
			}
		})
	}
}

var positionRE = regexp.MustCompile(`(Verification failed|Spare area is not zeroed) at position (\d+)`)

// TestCorruptionFoundLikeVeritysetup flips bytes across the data and the
// tree and checks that veritysetup and we both refuse, naming the same
// position.
func TestCorruptionFoundLikeVeritysetup(t *testing.T) {
	vs := testutil.Tool(t, "veritysetup")
	dir := t.TempDir()
	kinds := map[string]int{}
	for i, c := range cases() {
		if c.size < 8192 {
			continue // one-block devices have no tree: only the root can disagree
		}
		data := randomFile(t, dir, c.size, uint64(100+i))
		hashFile := filepath.Join(dir, "hash")
		tr := ours(t, data, hashFile, c.p)
		root := hex.EncodeToString(tr.RootHash)
		treeStart := int64(tr.HashStart) * int64(tr.HashBlockSize)
		r := rand.New(rand.NewPCG(uint64(i), 1))
		type flip struct {
			file string
			off  int64
		}
		var flips []flip
		covered := int64(tr.DataBlocks) * int64(tr.DataBlockSize)
		for k := 0; k < 4; k++ {
			flips = append(flips, flip{data, r.Int64N(covered)}, flip{hashFile, treeStart + r.Int64N(tr.HashDeviceSize-treeStart)})
		}
		flips = append(flips, flip{hashFile, treeStart}, flip{hashFile, tr.HashDeviceSize - 1}, flip{data, covered - 1})
		for _, f := range flips {
			orig, _ := os.ReadFile(f.file)
			bad := bytes.Clone(orig)
			bad[f.off] ^= 0x40
			os.WriteFile(f.file, bad, 0o644)
			out, theirErr := theirVerify(vs, data, hashFile, root, c.p)
			ourErr := ourVerify(t, data, hashFile, c.p, root)
			os.WriteFile(f.file, orig, 0o644)

			name := fmt.Sprintf("%s: flip %s@%d", c.name, filepath.Base(f.file), f.off)
			if theirErr == nil || ourErr == nil {
				t.Errorf("%s: not caught (veritysetup: %v, ours: %v)", name, theirErr, ourErr)
				continue
			}
			var me *MismatchError
			m := positionRE.FindStringSubmatch(out)
			switch {
			case m == nil:
				// veritysetup found the tree consistent and only the root wrong.
				if !errors.Is(ourErr, ErrRootHashMismatch) {
					t.Errorf("%s: veritysetup says %q, we say %v", name, out, ourErr)
				}
			case !errors.As(ourErr, &me):
				t.Errorf("%s: veritysetup says %q, we say %v", name, strings.TrimSpace(out), ourErr)
			default:
				pos, _ := strconv.ParseInt(m[2], 10, 64)
				if me.Offset != pos || me.Spare != (m[1] == "Spare area is not zeroed") {
					t.Errorf("%s: veritysetup %q, we %v", name, strings.TrimSpace(out), me)
				}
				if me.Spare && (f.file != hashFile || me.Byte != f.off) {
					t.Errorf("%s: spare mismatch names byte %d, the flipped byte is %d", name, me.Byte, f.off)
				}
				kind := me.Device
				if me.Spare {
					kind = "spare"
				}
				kinds[kind]++
			}
		}
	}
	t.Logf("mismatches found by kind: %v", kinds)
	if kinds["data"] == 0 || kinds["hash"] == 0 || kinds["spare"] == 0 {
		t.Errorf("the flips did not reach every kind of mismatch: %v", kinds)
	}
}

func TestBottlerocketFixture(t *testing.T) {
	dir := testutil.Bottlerocket(t, "verity")
	raw, err := os.ReadFile(filepath.Join(dir, "expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	var want struct {
		Salt   string `json:"salt_hex"`
		Root   string `json:"root_hash_hex"`
		Blocks uint64 `json:"data_blocks"`
		HashN  uint64 `json:"hash_blocks"`
		DM     string `json:"bottlerocket_dm_mod_create_equivalent"`
	}
	json.Unmarshal(raw, &want)
	data, _ := os.Open(filepath.Join(dir, "data-1mib.img"))
	defer data.Close()
	hash, _ := os.Open(filepath.Join(dir, "hash.img"))
	defer hash.Close()
	sb, err := ReadSuperblock(hash, 0)
	if err != nil {
		t.Fatal(err)
	}
	if hex.EncodeToString(sb.Salt) != want.Salt || sb.DataBlocks != want.Blocks || sb.Hash != "sha256" {
		t.Fatalf("superblock %+v", sb)
	}
	root, _ := ParseRootHash(want.Root, "sha256")
	if err := Verify(context.Background(), data, 1<<20, hash, sb.Params(0), root); err != nil {
		t.Fatalf("fixture does not verify: %v", err)
	}
	tr, err := Build(context.Background(), data, 1<<20, sb.Params(0))
	if err != nil {
		t.Fatal(err)
	}
	if tr.HashBlocks != want.HashN {
		t.Errorf("hash blocks %d, want %d", tr.HashBlocks, want.HashN)
	}
	got := tr.KernelParam("root", "PARTUUID=$boot_uuid/PARTNROFF=1", "PARTUUID=$boot_uuid/PARTNROFF=2", BottlerocketOptions...)
	if got != "dm-mod.create="+want.DM {
		t.Errorf("kernel parameter\n got %s\nwant dm-mod.create=%s", got, want.DM)
	}
	// A wrong root is refused as such.
	root[0] ^= 1
	if err := Verify(context.Background(), data, 1<<20, hash, sb.Params(0), root); !errors.Is(err, ErrRootHashMismatch) {
		t.Errorf("wrong root: %v", err)
	}
}
