package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestVerityCommands(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	os.WriteFile(data, buf, 0o644)
	hash := filepath.Join(dir, "hash")

	out, errs, code := ib("verity", "format", "--salt", "00ff", "--uuid", "11111111-2222-3333-4444-555555555555", "--json", data, hash)
	if code != 0 {
		t.Fatalf("format: %d %s", code, errs)
	}
	var info map[string]any
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"root_hash", "salt", "uuid", "hash", "data_block_size", "hash_block_size", "data_blocks",
		"hash_blocks", "superblock", "hash_offset", "hash_start", "dm_table", "dm_mod_create"} {
		if _, ok := info[k]; !ok {
			t.Errorf("format --json lacks %q", k)
		}
	}
	root := info["root_hash"].(string)
	if info["salt"] != "00ff" || info["data_blocks"].(float64) != 256 {
		t.Errorf("format --json: %v", info)
	}
	if out, _, _ := ib("verity", "format", "--salt", "00ff", data, filepath.Join(dir, "hash2")); strings.TrimSpace(out) != root {
		t.Errorf("plain format prints %q, want the root hash %s", out, root)
	}

	if _, errs, code := ib("verity", "verify", data, hash, root); code != 0 {
		t.Fatalf("verify: %d %s", code, errs)
	}
	buf[4096*9+1] ^= 1
	os.WriteFile(data, buf, 0o644)
	_, errs, code = ib("verity", "verify", data, hash, root)
	if code != exitCorrupt || !strings.Contains(errs, "data block 9") {
		t.Fatalf("corrupt data: exit %d, %q", code, errs)
	}
	if _, errs, code := ib("verity", "verify", data, hash, "abcd"); code != exitUsage {
		t.Errorf("short root hash: %d %s", code, errs)
	}
	out, _, code = ib("verity", "dump", hash)
	if code != 0 || !strings.Contains(out, "Data blocks:     \t256") || !strings.Contains(out, "Salt:            \t00ff") {
		t.Errorf("dump: %d %q", code, out)
	}
	if _, errs, code := ib("verity", "dump", data); code != exitError || !strings.Contains(errs, "signature") {
		t.Errorf("dump of a non-superblock: %d %q", code, errs)
	}
	for _, args := range [][]string{
		{"verity"}, {"verity", "nope"}, {"verity", "format", data},
		{"verity", "format", "--hash", "md5", data, hash}, {"verity", "format", "--salt", "zz", data, hash},
		{"verity", "format", "--salt", "00", "--no-salt", data, hash},
	} {
		if _, _, code := ib(args...); code != exitUsage {
			t.Errorf("%v: exit %d, want usage", args, code)
		}
	}
}
