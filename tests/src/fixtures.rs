//! Loads the benchmark fixture programs (`xdp_pass`, `xdp_gen`, `xdp_sink`) from the kernel
//! object, each in its own small instance, and reads their counters.
use anyhow::{Context, Result};
use aya::{
    maps::{MapData, PerCpuArray, PerCpuValues},
    programs::{Xdp, XdpMode},
    util::nr_cpus,
    Ebpf, EbpfLoader,
};
use ingress::maps::OBJECT;
use ingress_common::maps as names;

/// Slot of BENCH: flows the generator cycles through.
pub const GEN_FLOWS: u32 = 0;
/// Slot of BENCH: frames received by the sink.
pub const SINK_RECEIVED: u32 = 2;

/// A private instance of the object with one fixture program loaded.
pub struct Fixture {
    pub ebpf: Ebpf,
    name: &'static str,
}

impl Fixture {
    /// Loads `name` (the big L4 maps shrunk to nothing: fixtures do not use them).
    pub fn load(name: &'static str) -> Result<Self> {
        let mut loader = EbpfLoader::new();
        ingress::maps::kernel_log::configure(&mut loader, false);
        let mut ebpf = loader
            .map_max_entries(names::MAGLEV, 1)
            .map_max_entries(names::CONNTRACK, 2)
            .map_max_entries(names::REPLY_NAT, 2)
            .load(OBJECT)?;
        let prog: &mut Xdp = ebpf
            .program_mut(name)
            .context("fixture program")?
            .try_into()?;
        prog.load()?;
        Ok(Fixture { ebpf, name })
    }

    /// The program.
    pub fn prog(&self) -> Result<&Xdp> {
        Ok(self
            .ebpf
            .program(self.name)
            .context("fixture program")?
            .try_into()?)
    }

    /// Attaches natively to `ifname` (in the calling thread's namespace).
    pub fn attach(&mut self, ifname: &str) -> Result<()> {
        let prog: &mut Xdp = self
            .ebpf
            .program_mut(self.name)
            .context("fixture program")?
            .try_into()?;
        prog.attach(ifname, XdpMode::Driver)?;
        Ok(())
    }

    fn bench(&mut self) -> Result<PerCpuArray<&mut MapData, u64>> {
        Ok(PerCpuArray::try_from(
            self.ebpf.map_mut("BENCH").context("BENCH map")?,
        )?)
    }

    /// Sets a BENCH slot on every CPU.
    pub fn set(&mut self, slot: u32, value: u64) -> Result<()> {
        let n = nr_cpus().map_err(|(_, e)| e)?;
        self.bench()?
            .set(slot, PerCpuValues::try_from(vec![value; n])?, 0)?;
        Ok(())
    }

    /// Stores the generator's 64-byte frame template.
    pub fn set_frame(&mut self, frame: &[u8]) -> Result<()> {
        anyhow::ensure!(
            frame.len() == 64,
            "the generator template is exactly 64 bytes"
        );
        let mut words = [0u64; 8];
        for (i, w) in words.iter_mut().enumerate() {
            *w = u64::from_ne_bytes(frame[i * 8..i * 8 + 8].try_into()?);
        }
        let mut map: aya::maps::Array<&mut MapData, [u64; 8]> = aya::maps::Array::try_from(
            self.ebpf
                .map_mut("BENCH_FRAME")
                .context("BENCH_FRAME map")?,
        )?;
        map.set(0, words, 0)?;
        Ok(())
    }

    /// Sum of a BENCH slot over CPUs.
    pub fn get(&mut self, slot: u32) -> Result<u64> {
        Ok(self.bench()?.get(&slot, 0)?.iter().sum())
    }
}
