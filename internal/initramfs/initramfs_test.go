package initramfs

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io/fs"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/spotroot/spotroot/e2e/kernel"

	"github.com/spotroot/spotroot/internal/testenv"
)

func TestArchiveRoundTrip(t *testing.T) {
	a := NewArchive()
	a.MTime = 1700000000
	must(t, a.AddFile("/init", 0o755, []byte("#!/bin/sh\n")))
	must(t, a.AddFile("lib/modules/6.1/modules.dep", 0o644, []byte("x.ko:\n")))
	must(t, a.AddSymlink("sbin/init", "/init"))
	must(t, a.AddCharDev("dev/console", 0o600, 5, 1))
	must(t, a.AddDir("tmp", 0o777|fs.ModeSticky))
	if err := a.AddFile("init", 0o755, nil); err == nil {
		t.Error("adding /init twice succeeded")
	}
	if err := a.AddFile("init/x", 0o644, nil); err == nil {
		t.Error("a file below a file was accepted")
	}
	raw := a.Bytes()
	if len(raw)%4 != 0 {
		t.Errorf("archive length %d is not 4-aligned", len(raw))
	}
	if !bytes.HasSuffix(bytes.TrimRight(raw, "\x00"), []byte("TRAILER!!!")) {
		t.Error("no trailer at the end")
	}
	recs, err := ReadArchive(raw)
	must(t, err)
	var names []string
	byName := map[string]Record{}
	for i, r := range recs {
		names = append(names, r.Name)
		byName[r.Name] = r
		if r.Ino != uint32(i+1) || r.UID != 0 || r.GID != 0 || r.MTime != 1700000000 {
			t.Errorf("%s: ino %d uid %d gid %d mtime %d", r.Name, r.Ino, r.UID, r.GID, r.MTime)
		}
	}
	want := []string{"dev", "dev/console", "init", "lib", "lib/modules", "lib/modules/6.1", "lib/modules/6.1/modules.dep", "sbin", "sbin/init", "tmp"}
	if strings.Join(names, " ") != strings.Join(want, " ") {
		t.Errorf("names %v\nwant  %v", names, want)
	}
	if r := byName["init"]; r.Mode != 0o755 || string(r.Data) != "#!/bin/sh\n" {
		t.Errorf("init: mode %v data %q", r.Mode, r.Data)
	}
	if r := byName["sbin/init"]; r.Mode&fs.ModeSymlink == 0 || r.Link != "/init" {
		t.Errorf("sbin/init: mode %v link %q", r.Mode, r.Link)
	}
	if r := byName["dev/console"]; r.Mode&fs.ModeCharDevice == 0 || r.Major != 5 || r.Minor != 1 || r.Mode.Perm() != 0o600 {
		t.Errorf("dev/console: mode %v %d,%d", r.Mode, r.Major, r.Minor)
	}
	if r := byName["tmp"]; !r.Mode.IsDir() || r.Mode&fs.ModeSticky == 0 {
		t.Errorf("tmp: mode %v", r.Mode)
	}
	// GNU cpio, when installed, must read it too (it is what lsinitramfs uses).
	if _, err := exec.LookPath("cpio"); err == nil {
		cmd := exec.Command("cpio", "-t", "--quiet")
		cmd.Stdin = bytes.NewReader(raw)
		out, err := cmd.Output()
		must(t, err)
		if got := strings.Fields(string(out)); strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("cpio -t: %v", got)
		}
	}
}

func TestCompressRoundTrip(t *testing.T) {
	data := bytes.Repeat([]byte("spotroot initramfs "), 5000)
	for _, m := range Compressions {
		c1, err := Compress(m, data)
		must(t, err)
		c2, err := Compress(m, data)
		must(t, err)
		if !bytes.Equal(c1, c2) {
			t.Errorf("%s: two compressions differ", m)
		}
		if m != "none" && len(c1) >= len(data) {
			t.Errorf("%s: %d bytes from %d", m, len(c1), len(data))
		}
		back, err := Decompress(c1)
		must(t, err)
		if !bytes.Equal(back, data) {
			t.Errorf("%s: round trip differs", m)
		}
	}
	if _, err := Compress("lz4", data); err == nil {
		t.Error("unknown compression accepted")
	}
}

// kernelModules finds a kernel tree to build against: SPOTROOT_KERNEL_MODULES,
// the running kernel's, or the e2e cloud kernel cached by an earlier run.
func kernelModules(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("depmod"); err != nil {
		testenv.Skip(t, "depmod not installed (kmod; e2e/setup.sh installs it)")
	}
	cands := []string{os.Getenv("SPOTROOT_KERNEL_MODULES")}
	if home, err := os.UserCacheDir(); err == nil {
		m, _ := filepath.Glob(filepath.Join(home, "spotroot/kernel/*/root/lib/modules/*"))
		sort.Sort(sort.Reverse(sort.StringSlice(m)))
		cands = append(cands, m...)
	}
	for _, c := range cands {
		if c == "" {
			continue
		}
		if _, err := os.Stat(filepath.Join(c, "modules.order")); err == nil {
			return c
		}
	}
	if os.Getenv("CI") != "" {
		// A fresh CI machine: fetch the cloud kernel (cached for the e2e tests).
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		k, err := kernel.Ensure(ctx, "")
		if err != nil {
			t.Fatalf("no kernel modules tree and fetching the cloud kernel failed: %v", err)
		}
		return k.ModulesDir
	}
	t.Skip("no kernel modules tree (run the e2e tests once, or set SPOTROOT_KERNEL_MODULES)")
	return ""
}

func fakeSpotroot(t *testing.T) string {
	t.Helper()
	self, err := os.Executable() // any ELF binary stands in for spotroot
	must(t, err)
	return self
}

// TestBuildReproducibleAndContents builds the initramfs twice from the same
// inputs and checks the bytes are identical and the contents complete.
func TestBuildReproducibleAndContents(t *testing.T) {
	mods := kernelModules(t)
	o := Options{Spotroot: fakeSpotroot(t), ModulesDir: mods, SysRoot: testRoot(t), Config: []byte("spotroot:\n  volume: {id: vol-0123456789abcdef0}\n")}
	r1, err := Build(context.Background(), o)
	must(t, err)
	r2, err := Build(context.Background(), o)
	must(t, err)
	if !bytes.Equal(r1.Data, r2.Data) {
		t.Fatalf("two builds differ: %d and %d bytes", len(r1.Data), len(r2.Data))
	}
	t.Logf("initramfs %d bytes (cpio %d), modules %v, built in %v, missing %v", len(r1.Data), r1.Uncompressed, r1.Modules, r1.Builtin, r1.Missing)
	if !bytes.HasPrefix(r1.Data, []byte{0x28, 0xb5, 0x2f, 0xfd}) {
		t.Error("default compression is not zstd")
	}
	raw, err := Decompress(r1.Data)
	must(t, err)
	recs, err := ReadArchive(raw)
	must(t, err)
	files := map[string]Record{}
	for _, r := range recs {
		files[r.Name] = r
	}
	self, _ := os.ReadFile(o.Spotroot)
	if r, ok := files["init"]; !ok || !bytes.Equal(r.Data, self) || r.Mode != 0o755 {
		t.Errorf("/init is not the spotroot binary with mode 0755")
	}
	if r := files["etc/spotroot/config.yaml"]; !bytes.Equal(r.Data, o.Config) {
		t.Errorf("config.yaml = %q", r.Data)
	}
	dir := "lib/modules/" + filepath.Base(mods) + "/"
	for _, f := range []string{"modules.dep", "modules.alias", "modules.builtin", "modules.dep.bin", "modules.order"} {
		if _, ok := files[dir+f]; !ok {
			t.Errorf("missing %s%s", dir, f)
		}
	}
	dep := string(files[dir+"modules.dep"].Data)
	for _, m := range r1.Modules {
		if _, ok := files[dir+m]; !ok {
			t.Errorf("module %s listed but not in the archive", m)
		}
		if !strings.Contains(dep, m+":") {
			t.Errorf("module %s not in modules.dep", m)
		}
	}
	// The NIC chain of the cloud kernel, when it has virtio_net as a module.
	if strings.Contains(strings.Join(r1.Modules, " "), "virtio_net.ko") {
		for _, m := range []string{"virtio_net.ko", "net_failover.ko", "failover.ko", "virtio_pci.ko", "virtio_ring.ko", "virtio.ko"} {
			found := false
			for _, have := range r1.Modules {
				found = found || filepath.Base(have) == m
			}
			if !found {
				t.Errorf("NIC chain: %s missing from %v", m, r1.Modules)
			}
		}
		if !strings.Contains(string(files[dir+"modules.alias"].Data), "virtio_net") {
			t.Error("modules.alias has no virtio_net alias")
		}
	}
	for _, r := range recs {
		if r.UID != 0 || r.GID != 0 || r.MTime != 0 {
			t.Errorf("%s: uid %d gid %d mtime %d", r.Name, r.UID, r.GID, r.MTime)
		}
	}
}

// testRoot is a target root whose CA bundle is at RHEL's path.
func testRoot(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	p := filepath.Join(root, "etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem")
	must(t, os.MkdirAll(filepath.Dir(p), 0o755))
	must(t, os.WriteFile(p, testCAPEM(t), 0o644))
	return root
}

func testCAPEM(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	must(t, err)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func TestBuildWithoutModules(t *testing.T) {
	root := testRoot(t)
	r, err := Build(context.Background(), Options{Spotroot: fakeSpotroot(t), Modules: []string{}, Compression: "gzip", SysRoot: root})
	must(t, err)
	raw, err := Decompress(r.Data)
	must(t, err)
	recs, err := ReadArchive(raw)
	must(t, err)
	var names []string
	for _, x := range recs {
		names = append(names, x.Name)
		// The target root's bundle, where spotroot looks first.
		if x.Name == "etc/ssl/certs/ca-certificates.crt" {
			want, _ := os.ReadFile(filepath.Join(root, "etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem"))
			if !bytes.Equal(x.Data, want) {
				t.Errorf("the initramfs's CA bundle is not the target root's")
			}
		}
	}
	if got := strings.Join(names, " "); got != "dev dev/console dev/null etc etc/ssl etc/ssl/certs etc/ssl/certs/ca-certificates.crt init proc root run sys tmp" {
		t.Errorf("entries: %s", got)
	}
	if !strings.HasSuffix(r.CABundle, "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem") {
		t.Errorf("Result.CABundle = %q", r.CABundle)
	}
	// No bundle in the target root: refused, naming what to do.
	if _, err := Build(context.Background(), Options{Spotroot: fakeSpotroot(t), Modules: []string{}, SysRoot: t.TempDir()}); err == nil ||
		!strings.Contains(err.Error(), "no CA bundle") || !strings.Contains(err.Error(), "install ca-certificates") {
		t.Errorf("a target root without CA bundle: err = %v", err)
	}
	r, err = Build(context.Background(), Options{Spotroot: fakeSpotroot(t), Modules: []string{}, CABundle: NoCABundle})
	must(t, err)
	if r.CABundle != "" {
		t.Errorf("CABundle none still copied %s", r.CABundle)
	}
	if _, err := Build(context.Background(), Options{Spotroot: "/nonexistent"}); err == nil {
		t.Error("missing spotroot binary accepted")
	}
	notELF := filepath.Join(t.TempDir(), "x")
	must(t, os.WriteFile(notELF, []byte("#!/bin/sh\n"), 0o755))
	if _, err := Build(context.Background(), Options{Spotroot: notELF, Modules: []string{}}); err == nil || !strings.Contains(err.Error(), "ELF") {
		t.Errorf("non-ELF spotroot: err = %v", err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
