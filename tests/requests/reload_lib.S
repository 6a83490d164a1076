/* reload.c's two libraries, built from this file twice: alloc_here calls
   malloc from the same offset in both (same code size, same layout), but
   with another frame: FRAME bytes below the return address, where the
   other one keeps 8 (a zero stored at SLOT(%rsp) sits where that one's
   return address is). Unwinding the second with the first's rules gives
   a wrong caller. */
    .text
    .globl alloc_here
    .type alloc_here, @function
alloc_here:
    .cfi_startproc
    sub $FRAME, %rsp
    .cfi_def_cfa_offset FRAME + 8
    /* movq $0, SLOT(%rsp) with a one-byte displacement in both builds,
       0 included, so that the call below is at the same offset */
    .byte 0x48, 0xc7, 0x44, 0x24, SLOT, 0, 0, 0, 0
    mov $24, %edi
    call malloc@PLT
    add $FRAME, %rsp
    .cfi_def_cfa_offset 8
    ret
    .cfi_endproc
    .size alloc_here, .-alloc_here
    .section .note.GNU-stack, "", @progbits
