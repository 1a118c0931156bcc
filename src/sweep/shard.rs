//! Splitting a sweep over many jobs: `--shard K/N` takes every N-th checkpoint starting at the
//! K-th (0-based) of the sweep's natural order, with all of its measurements, so each model is
//! loaded by one job only and every job gets a mix of early and late checkpoints.
//! `--shard auto` reads K and N from a Slurm job array or a Kubernetes Indexed Job.

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

/// The environment variable that gives N to `--shard auto` where the scheduler does not.
pub const COUNT_VARIABLE: &str = "PERPLEX_SHARD_COUNT";

impl Shard {
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    /// `K/N`, or `auto` (see [`Shard::from_env`]); `count` is `--shard-count`, for `auto` only.
    pub fn parse(text: &str, count: Option<usize>, env: impl Fn(&str) -> Option<String>) -> Result<Shard> {
        if text == "auto" {
            return Shard::from_env(count, env);
        }
        if count.is_some() {
            return Err(Error::bad_input("--shard-count applies to --shard auto only; --shard K/N gives the count"));
        }
        let parsed = text.split_once('/').and_then(|(k, n)| Some((k.trim().parse().ok()?, n.trim().parse().ok()?)));
        match parsed {
            Some((index, count)) => Shard::new(index, count, &format!("--shard {text}")),
            None => Err(Error::bad_input(format!("--shard {text}: expected K/N (0 <= K < N, e.g. 0/4) or auto"))),
        }
    }

    fn new(index: usize, count: usize, origin: &str) -> Result<Shard> {
        if count == 0 || index >= count {
            return Err(Error::bad_input(format!("{origin}: shard {index} of {count} does not exist (need 0 <= K < N)")));
        }
        Ok(Shard { index, count })
    }

    /// A Slurm job array (`SLURM_ARRAY_TASK_ID` minus `SLURM_ARRAY_TASK_MIN`, of
    /// `SLURM_ARRAY_TASK_COUNT`), else a Kubernetes Indexed Job (`JOB_COMPLETION_INDEX`, of
    /// `--shard-count` or `PERPLEX_SHARD_COUNT`). `--shard-count` overrides Slurm's count too.
    pub fn from_env(count: Option<usize>, env: impl Fn(&str) -> Option<String>) -> Result<Shard> {
        let number = |name: &str| -> Result<Option<usize>> {
            match env(name) {
                None => Ok(None),
                Some(v) => v.trim().parse().map(Some).map_err(|_| Error::bad_input(format!("--shard auto: {name}={v} is not a number"))),
            }
        };
        let env_count = number(COUNT_VARIABLE)?;
        if let Some(id) = number("SLURM_ARRAY_TASK_ID")? {
            let min = number("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
            let total = count.or(number("SLURM_ARRAY_TASK_COUNT")?).or(env_count).ok_or_else(|| {
                Error::bad_input("--shard auto: SLURM_ARRAY_TASK_ID is set but not SLURM_ARRAY_TASK_COUNT; give --shard-count N")
            })?;
            let index = id.checked_sub(min).ok_or_else(|| Error::bad_input("--shard auto: SLURM_ARRAY_TASK_ID is below SLURM_ARRAY_TASK_MIN"))?;
            return Shard::new(index, total, "--shard auto (Slurm array)");
        }
        if let Some(index) = number("JOB_COMPLETION_INDEX")? {
            let total = count.or(env_count).ok_or_else(|| {
                Error::bad_input(format!(
                    "--shard auto: JOB_COMPLETION_INDEX is set but the number of shards is not: give --shard-count N or set \
                     {COUNT_VARIABLE} (the Job's completions)"
                ))
            })?;
            return Shard::new(index, total, "--shard auto (Kubernetes Indexed Job)");
        }
        Err(Error::bad_input(
            "--shard auto: neither SLURM_ARRAY_TASK_ID (a Slurm job array) nor JOB_COMPLETION_INDEX (a Kubernetes Indexed Job) \
             is set; use --shard K/N",
        ))
    }

    /// Whether the checkpoint at `position` of the sweep's natural order belongs to this shard.
    pub fn takes(&self, position: usize) -> bool {
        position % self.count == self.index
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    }

    #[test]
    fn parses_explicit_shards() {
        assert_eq!(Shard::parse("1/4", None, env(&[])).unwrap(), Shard { index: 1, count: 4 });
        assert!(Shard::parse("4/4", None, env(&[])).is_err());
        assert!(Shard::parse("1/0", None, env(&[])).is_err());
        assert!(Shard::parse("x", None, env(&[])).is_err());
        assert!(Shard::parse("0/2", Some(2), env(&[])).is_err());
    }

    #[test]
    fn reads_slurm_and_kubernetes() {
        let slurm = env(&[("SLURM_ARRAY_TASK_ID", "3"), ("SLURM_ARRAY_TASK_MIN", "1"), ("SLURM_ARRAY_TASK_COUNT", "4")]);
        assert_eq!(Shard::parse("auto", None, slurm).unwrap(), Shard { index: 2, count: 4 });
        let k8s = env(&[("JOB_COMPLETION_INDEX", "2"), ("PERPLEX_SHARD_COUNT", "3")]);
        assert_eq!(Shard::parse("auto", None, k8s).unwrap(), Shard { index: 2, count: 3 });
        assert_eq!(Shard::parse("auto", Some(5), env(&[("JOB_COMPLETION_INDEX", "4")])).unwrap(), Shard { index: 4, count: 5 });
        assert!(Shard::parse("auto", None, env(&[("JOB_COMPLETION_INDEX", "0")])).is_err(), "no count");
        assert!(Shard::parse("auto", None, env(&[])).is_err(), "no scheduler");
    }

    #[test]
    fn shards_partition_the_positions() {
        let shards: Vec<Shard> = (0..3).map(|index| Shard { index, count: 3 }).collect();
        for position in 0..20 {
            assert_eq!(shards.iter().filter(|s| s.takes(position)).count(), 1);
        }
    }
}
