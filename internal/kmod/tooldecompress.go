package kmod

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// decompressTools are the commands that write a compressed module to
// standard output, by compression suffix.
var decompressTools = map[string][]string{
	"xz":  {"xz", "-dc"},
	"zst": {"zstd", "-dc"},
}

// toolDirs are searched for them: PID 1 starts with no PATH.
var toolDirs = []string{"/usr/sbin", "/usr/bin", "/sbin", "/bin"}

// toolDecompressor decompresses r by running the xz or zstd of the root
// spotroot runs from. A failing tool's exit status and message are the
// reader's final error, so a truncated output is never taken for a module.
func toolDecompressor(r io.Reader, comp string) (io.ReadCloser, error) {
	argv, ok := decompressTools[comp]
	if !ok {
		return nil, fmt.Errorf("unsupported module compression %q", comp)
	}
	path := lookTool(argv[0])
	if path == "" {
		return nil, fmt.Errorf("the kernel cannot decompress %s modules (Linux >= 5.17 with CONFIG_MODULE_DECOMPRESS can) and there is no %s in %s of this root to do it",
			comp, argv[0], strings.Join(toolDirs, ", "))
	}
	cmd := exec.Command(path, argv[1:]...)
	cmd.Stdin = r
	t := &toolReader{cmd: cmd}
	cmd.Stderr = &t.stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("run %s: %w", path, err)
	}
	t.out = out
	return t, nil
}

func lookTool(name string) string {
	dirs := toolDirs
	if p := os.Getenv("PATH"); p != "" {
		dirs = append(filepath.SplitList(p), dirs...)
	}
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}

type toolReader struct {
	cmd    *exec.Cmd
	out    io.ReadCloser
	stderr bytes.Buffer
	done   bool
}

func (t *toolReader) Read(p []byte) (int, error) {
	n, err := t.out.Read(p)
	if err == io.EOF && !t.done {
		t.done = true
		if werr := t.cmd.Wait(); werr != nil {
			return n, fmt.Errorf("%s: %v: %s", t.cmd.Path, werr, strings.TrimSpace(t.stderr.String()))
		}
	}
	return n, err
}

// Close stops the tool if the module was not read to the end.
func (t *toolReader) Close() error {
	if !t.done {
		t.done = true
		_ = t.cmd.Process.Kill()
		_ = t.cmd.Wait()
	}
	return nil
}
