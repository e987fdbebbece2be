// Reads ID group-3 register number x0 (0..55: (CRm - 1) * 8 + op2 of S3_0_C0_<CRm>_<op2>):
// MRS encodes its register in the instruction, so this is a table of MRS; RET pairs.
.section .text.idregs, "ax"
.global read_id_group3
read_id_group3:
    adr     x1, 1f
    add     x1, x1, x0, lsl #3
    br      x1
1:
.irp crm, 1, 2, 3, 4, 5, 6, 7
.irp op2, 0, 1, 2, 3, 4, 5, 6, 7
    mrs     x0, S3_0_C0_C\crm\()_\op2
    ret
.endr
.endr
