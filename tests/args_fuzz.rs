//! A stable-toolchain stand-in for the cargo-fuzz target (fuzz/fuzz_targets/args_parser.rs):
//! a bounded, deterministic mutation run over the same entry point. It must never panic.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::path::Path;

const SEEDS: &[&str] = &[
    r#"{"name":"calico-kube-controllers","_ansible_check_mode":true,"_ansible_diff":"yes"}"#,
    r#"{"detect":"yes","exclude":"a,b","kind":"mutating","force":1,"backup_dir":"/tmp/x"}"#,
    r#"{"extra_rules":["{api_groups: [\"\"], resources: [pods], verbs: [get]}"],"validate_certs":"no"}"#,
    r#"{"rules":[{"api_groups":[""],"resources":["pods"],"verbs":"get,list"}],"api_key":"t"}"#,
    r#"{"calico_version":"v3.13.2","enabled_controllers":"node,workloadendpoint"}"#,
    r#"{"name":"x","detect":false,"kind":null,"exclude":[],"force":"off"}"#,
];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % (n as u64)).unwrap()
    }
}

const TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b":",
    b",",
    b"null",
    b"true",
    b"1e999",
    b"-1",
    b"\"\"",
    b"\\u0000",
    b"\xff",
    b"{\"a\":",
    b"\"_ansible_check_mode\":",
    b"\"rules\":[",
    b"18446744073709551616",
];

fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..=rng.below(4) {
        let pos = if out.is_empty() {
            0
        } else {
            rng.below(out.len() + 1)
        };
        match rng.below(4) {
            0 if !out.is_empty() => {
                let end = (pos + rng.below(8)).min(out.len());
                out.drain(pos.min(end)..end);
            }
            1 => {
                let token = TOKENS[rng.below(TOKENS.len())];
                out.splice(pos..pos, token.iter().copied());
            }
            2 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] = u8::try_from(rng.next() & 0xff).unwrap();
            }
            _ => {
                let i = rng.below(out.len().max(1));
                let chunk: Vec<u8> = out.iter().skip(i).take(16).copied().collect();
                out.splice(pos..pos, chunk);
            }
        }
    }
    out
}

#[test]
fn args_parser_never_panics_on_mutated_input() {
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let mut accepted = 0;
    for round in 0..20_000 {
        let seed = SEEDS[round % SEEDS.len()].as_bytes();
        let input = mutate(&mut rng, seed);
        let result =
            std::panic::catch_unwind(|| kubemend::actions::fuzz_args(&input, Path::new("args")));
        let Ok(n) = result else {
            panic!("panic on input {:?}", String::from_utf8_lossy(&input));
        };
        accepted += n;
    }
    // Mutations that keep the input valid exist; a run accepting nothing would test little.
    assert!(accepted > 0);
}

#[test]
fn seeds_are_accepted_by_some_module() {
    for seed in SEEDS {
        assert!(
            kubemend::actions::fuzz_args(seed.as_bytes(), Path::new("args")) > 0,
            "{seed}"
        );
    }
}
