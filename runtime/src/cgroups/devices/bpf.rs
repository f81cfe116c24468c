//! cgroup v2 has no `devices.*` files: the kernel asks a `BPF_CGROUP_DEVICE` program attached to
//! the cgroup, once per open or mknod. As runc and crun do, we generate that program from the
//! rules and attach it to the container's cgroup directory before the init is cloned into it.
//! The attachment keeps the program alive; it goes with the cgroup (nothing to undo).
//!
//! The program, for rules r1..rn (the context is `struct bpf_cgroup_dev_ctx`):
//!
//! ```text
//!   r2 = ctx->access_type & 0xffff     device type: 1 block, 2 char
//!   r3 = ctx->access_type >> 16        requested access: 1 mknod, 2 read, 4 write
//!   r4 = ctx->major ; r5 = ctx->minor
//! rule i:                              each test jumps to rule i+1 when it fails
//!   if r2 != TYPE goto next            (unless the rule is `a`)
//!   r1 = r3 ; r1 &= ~ACCESS ; if r1 != 0 goto next   (unless ACCESS is rwm)
//!   if r4 != MAJOR goto next           (unless *)
//!   if r5 != MINOR goto next           (unless *)
//!   r0 = 1 ; exit                      allowed
//! end:
//!   r0 = 0 ; exit                      denied (EPERM)
//! ```
//!
//! Instruction encoding (`struct bpf_insn`, 8 bytes): opcode u8; dst register in the low 4 bits
//! and src register in the high 4 bits of the next byte; a signed 16-bit jump offset (in
//! instructions, from the next one); a signed 32-bit immediate.

use super::Rule;
use crate::error::{Error, Result};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// One eBPF instruction, laid out as the kernel's `struct bpf_insn`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u8,
    /// dst | src << 4
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

// Opcodes: class | operation | source (K: the immediate, X: the src register).
const LDX_MEM_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const ALU64_AND_K: u8 = 0x57; // BPF_ALU64 | BPF_AND | BPF_K
const ALU64_RSH_K: u8 = 0x77; // BPF_ALU64 | BPF_RSH | BPF_K
const ALU64_MOV_K: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
const ALU64_MOV_X: u8 = 0xbf; // BPF_ALU64 | BPF_MOV | BPF_X
const JNE_K: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
const EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: dst | (src << 4),
        off,
        imm,
    }
}

fn access_bits(access: &str) -> i32 {
    access.chars().fold(0, |b, c| {
        b | match c {
            'm' => 1,
            'r' => 2,
            'w' => 4,
            _ => 0,
        }
    })
}

/// The program for `rules` (first match allows; no match denies).
pub fn program(rules: &[Rule]) -> Vec<Insn> {
    let mut p = vec![
        insn(LDX_MEM_W, 2, 1, 0, 0),
        insn(ALU64_AND_K, 2, 0, 0, 0xffff),
        insn(LDX_MEM_W, 3, 1, 0, 0),
        insn(ALU64_RSH_K, 3, 0, 0, 16),
        insn(LDX_MEM_W, 4, 1, 4, 0),
        insn(LDX_MEM_W, 5, 1, 8, 0),
    ];
    for r in rules {
        // The tests of one rule, each a jump to the next rule; then allow.
        let mut tests: Vec<Vec<Insn>> = Vec::new();
        match r.kind {
            'b' => tests.push(vec![insn(JNE_K, 2, 0, 0, 1)]),
            'c' => tests.push(vec![insn(JNE_K, 2, 0, 0, 2)]),
            _ => {}
        }
        let acc = access_bits(&r.access);
        if acc != 7 {
            tests.push(vec![
                insn(ALU64_MOV_X, 1, 3, 0, 0),
                insn(ALU64_AND_K, 1, 0, 0, !acc & 7),
                insn(JNE_K, 1, 0, 0, 0),
            ]);
        }
        if let Some(m) = r.major {
            tests.push(vec![insn(JNE_K, 4, 0, 0, m as i32)]);
        }
        if let Some(m) = r.minor {
            tests.push(vec![insn(JNE_K, 5, 0, 0, m as i32)]);
        }
        let mut block: Vec<Insn> = tests.into_iter().flatten().collect();
        block.push(insn(ALU64_MOV_K, 0, 0, 0, 1));
        block.push(insn(EXIT, 0, 0, 0, 0));
        let len = block.len();
        for (i, x) in block.iter_mut().enumerate() {
            if x.code == JNE_K {
                // To the first instruction after this block.
                x.off = (len - i - 1) as i16;
            }
        }
        p.extend(block);
    }
    p.push(insn(ALU64_MOV_K, 0, 0, 0, 0));
    p.push(insn(EXIT, 0, 0, 0, 0));
    p
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// The leading fields of `union bpf_attr` for BPF_PROG_LOAD (the kernel wants the rest zero).
#[repr(C)]
#[derive(Default)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    _rest: [u64; 8],
}

/// The fields of `union bpf_attr` for BPF_PROG_ATTACH.
#[repr(C)]
#[derive(Default)]
struct ProgAttach {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    _rest: [u64; 4],
}

fn bpf<T>(cmd: libc::c_long, attr: &T) -> std::io::Result<i64> {
    // SAFETY: `attr` is a properly laid out, zero-padded bpf_attr variant of the given size.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *const T,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Loads the program for `rules`; the verifier's log is in the error.
pub(super) fn load(rules: &[Rule]) -> Result<OwnedFd> {
    let prog = program(rules);
    let mut log = vec![0u8; 64 * 1024];
    let license = c"Apache";
    let mut attr = ProgLoad {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: prog.len() as u32,
        insns: prog.as_ptr() as u64,
        license: license.as_ptr() as u64,
        ..Default::default()
    };
    let fd = match bpf(BPF_PROG_LOAD, &attr) {
        Ok(fd) => fd,
        Err(_) => {
            // Again with the verifier's log, for the message.
            attr.log_level = 1;
            attr.log_size = log.len() as u32;
            attr.log_buf = log.as_mut_ptr() as u64;
            match bpf(BPF_PROG_LOAD, &attr) {
                Ok(fd) => fd,
                Err(e) => {
                    let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
                    return Err(Error::Cgroup(format!(
                        "failed to load the device cgroup's eBPF program: {e}: {}",
                        String::from_utf8_lossy(&log[..end]).trim()
                    )));
                }
            }
        }
    };
    // SAFETY: a new fd the kernel just gave us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Loads the program and attaches it to the cgroup directory `dir`.
pub(super) fn attach(dir: &Path, rules: &[Rule]) -> Result<()> {
    let prog = load(rules)?;
    let cg = std::fs::File::open(dir)
        .map_err(|e| Error::Cgroup(format!("failed to open {}: {e}", dir.display())))?;
    let attr = ProgAttach {
        target_fd: cg.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        ..Default::default()
    };
    bpf(BPF_PROG_ATTACH, &attr).map_err(|e| {
        Error::Cgroup(format!(
            "failed to attach the device program to {}: {e}",
            dir.display()
        ))
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{Rule, default_rules};
    use super::*;

    #[test]
    fn instructions_are_encoded_as_the_kernel_lays_them_out() {
        assert_eq!(std::mem::size_of::<Insn>(), 8);
        // r2 = *(u32 *)(r1 + 0): dst 2, src 1.
        let i = insn(LDX_MEM_W, 2, 1, 0, 0);
        // SAFETY: Insn is repr(C), 8 plain bytes.
        let bytes: [u8; 8] = unsafe { std::mem::transmute(i) };
        assert_eq!(bytes, [0x61, 0x12, 0, 0, 0, 0, 0, 0]);
        // if r4 != 136 goto +3
        let bytes: [u8; 8] = unsafe { std::mem::transmute(insn(JNE_K, 4, 0, 3, 136)) };
        assert_eq!(bytes, [0x55, 0x04, 3, 0, 136, 0, 0, 0]);
    }

    #[test]
    fn each_failed_test_jumps_to_the_next_rule() {
        let r = Rule {
            kind: 'c',
            major: Some(1),
            minor: Some(3),
            access: "rw".into(),
        };
        let p = program(&[r]);
        // 6 loads, type(1) + access(3) + major(1) + minor(1) + allow(2), deny(2).
        assert_eq!(p.len(), 6 + 8 + 2);
        let block = &p[6..14];
        for (i, x) in block.iter().enumerate() {
            if x.code == JNE_K {
                assert_eq!(
                    6 + i + 1 + x.off as usize,
                    14,
                    "jump at {i} lands on the deny"
                );
            }
        }
        // Requested bits outside "rw" (mknod) fail the rule.
        assert_eq!(block[2], insn(ALU64_AND_K, 1, 0, 0, 1));
        assert_eq!(p[15], insn(EXIT, 0, 0, 0, 0));
        assert_eq!(p[14], insn(ALU64_MOV_K, 0, 0, 0, 0));
    }

    #[test]
    fn the_kernel_verifier_accepts_the_default_program() {
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("skipped: BPF_PROG_LOAD needs root");
            return;
        }
        load(&default_rules(&[])).expect("the verifier accepts the program");
    }
}
