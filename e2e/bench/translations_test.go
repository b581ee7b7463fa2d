package main

import (
	"slices"
	"strings"
	"testing"
)

// A QEMU in_asm log in miniature: the kernel boots, spotroot's entry block
// (0x401000) opens the span, its user and kernel blocks are counted (a
// block re-translated counts again: translating is the cost), the final
// init's entry block (0x402000) closes it.
const inAsmLog = `----------------
IN: 
0xffffffff81000000:  48 89 e5                 movq     %rsp, %rbp

----------------
IN: 
0x00401000:  31 c0                    xorl     %eax, %eax
0x00401002:  c3                       retq     

----------------
IN: 
0xffffffff81000010:  0f 05                    syscall  
0xffffffff81000012:  c3                       retq     

----------------
IN: 
0x00401000:  31 c0                    xorl     %eax, %eax

----------------
IN: 
0x00402000:  90                       nop      
0x00402001:  90                       nop      

----------------
IN: 
0xffffffff81000020:  90                       nop      
`

func TestCountTranslated(t *testing.T) {
	got, per, err := countTranslated(strings.NewReader(inAsmLog), 0x401000, 0x402000, []uint64{0xffffffff81000010, 0x409000})
	if err != nil {
		t.Fatal(err)
	}
	if got != (Translated{User: 3, Kernel: 2}) {
		t.Errorf("counted %+v, want user 3, kernel 2", got)
	}
	// The syscall block opens stretch 1 and everything after it is in it;
	// a mark never reached has none.
	if !slices.Equal(per, []int{2, 3, 0}) {
		t.Errorf("stretches %v, want [2 3 0]", per)
	}
	if _, _, err := countTranslated(strings.NewReader(inAsmLog), 0x403000, 0x402000, nil); err == nil || !strings.Contains(err.Error(), "spotroot's entry point 0x403000") {
		t.Errorf("no start block: err = %v", err)
	}
	if _, _, err := countTranslated(strings.NewReader(inAsmLog), 0x401000, 0x404000, nil); err == nil || !strings.Contains(err.Error(), "volume's init's entry point 0x404000") {
		t.Errorf("no end block: err = %v", err)
	}
}
