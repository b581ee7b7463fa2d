// probe is the "real init" of the sysroot integration test: it reports what
// the world looks like after the switch.
package main

import (
	"bufio"
	"fmt"
	"os"
	"strings"
)

func main() {
	root := "?"
	if f, err := os.Open("/proc/self/mountinfo"); err == nil {
		s := bufio.NewScanner(f)
		for s.Scan() {
			fields := strings.Fields(s.Text())
			if len(fields) > 4 && fields[4] == "/" {
				for i, fl := range fields {
					if fl == "-" && i+2 < len(fields) {
						root = fields[i+2]
					}
				}
			}
		}
	}
	_, procErr := os.Stat("/proc/self/stat")
	_, devErr := os.Stat("/dev/null")
	marker, _ := os.ReadFile("/run/marker")
	_, oldErr := os.Stat(os.Getenv("OLD_ROOT_PROBE"))
	fmt.Printf("PROBE argv=%s root=%s proc=%v dev=%v run=%s oldroot-visible=%v\n",
		strings.Join(os.Args, ","), root, procErr == nil, devErr == nil, strings.TrimSpace(string(marker)), oldErr == nil)
}
