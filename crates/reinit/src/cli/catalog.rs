//! `reinit schemes`: what each scheme does, needs, takes, and where it comes from.

use reinit::Error;
use serde::Serialize;

use super::args::SchemesArgs;

#[derive(Serialize)]
struct Entry {
    name: &'static str,
    summary: &'static str,
    needs: &'static str,
    params: &'static str,
    paper: &'static str,
}

const CATALOG: &[Entry] = &[
    Entry {
        name: "he",
        summary: "Gaussian (or uniform) with variance gain²/fan",
        needs: "activation (gain)",
        params: "--distribution normal|uniform|truncated-normal, --fan-mode fan-in|fan-out, --gain",
        paper: "He et al., Delving Deep into Rectifiers, ICCV 2015",
    },
    Entry {
        name: "xavier",
        summary: "variance 2·gain²/(fan_in+fan_out)",
        needs: "activation (gain)",
        params: "--distribution, --gain",
        paper: "Glorot & Bengio, AISTATS 2010",
    },
    Entry {
        name: "lecun",
        summary: "variance 1/fan_in",
        needs: "—",
        params: "--distribution, --fan-mode, --gain",
        paper: "LeCun et al., Efficient BackProp, 1998",
    },
    Entry {
        name: "torch-default",
        summary: "what PyTorch Linear/Conv modules start from: U(±1/√fan_in)",
        needs: "—",
        params: "—",
        paper: "PyTorch nn.Linear / nn.ConvNd reset_parameters",
    },
    Entry {
        name: "orthogonal",
        summary: "Haar orthogonal (sign-corrected QR of the smaller side) × gain; conv flattened",
        needs: "activation (gain)",
        params: "--gain",
        paper: "Saxe et al., Exact solutions to the nonlinear dynamics of learning, ICLR 2014",
    },
    Entry {
        name: "delta-orthogonal",
        summary: "orthogonal at the identity tap of a conv kernel, zeros elsewhere; gain: the critical point before tanh/hard-tanh (tanh σw²=1.05, σb²=2.01e-5, as critical), calculate_gain otherwise",
        needs: "pads/strides (delta tap), activation",
        params: "--gain, --sigma-b",
        paper: "Xiao et al., Dynamical Isometry and a Mean Field Theory of CNNs, ICML 2018",
    },
    Entry {
        name: "critical",
        summary: "orthogonal × σw with biases N(0, σb²) on the critical line of the following activation (tanh default σw²=1.05, σb²=2.01e-5)",
        needs: "activation",
        params: "--q-star",
        paper: "Pennington, Schoenholz & Ganguli, Resurrecting the sigmoid, NeurIPS 2017",
    },
    Entry {
        name: "eoi",
        summary: "exact orthogonal sparse matrix from random Givens rotations at a target density; conv via sparse delta",
        needs: "pads/strides for conv",
        params: "--density (0.05), --sparsity-distribution uniform|erk|uniform-skip-first-last, --gain (σw), --sigma-b, --more-nonzeros",
        paper: "Nowak et al., Sparser, Better, Deeper, Stronger (EOI), ICML 2024",
    },
    Entry {
        name: "idinit",
        summary: "padded identity ×τ; ε on the last layer of each residual branch",
        needs: "residual blocks",
        params: "--tau (1), --epsilon (1e-6)",
        paper: "Pan et al., IDInit, ICLR 2025",
    },
    Entry {
        name: "relu-share",
        summary: "mirrored blocks [[A,−A],[−A,A]]: exactly linear at init; the default Gaussian submatrix (the paper's) is not isometric (Var of squared singular values grows with depth), --submatrix orthogonal gives all singular values 1",
        needs: "a plain ReLU chain",
        params: "--submatrix gaussian|orthogonal, --sigma-b",
        paper: "Burkholz & Dubatovka, Initialization of ReLUs for Dynamical Isometry, NeurIPS 2019",
    },
    Entry {
        name: "fixup",
        summary: "zero last branch layer and classifier, He elsewhere scaled by L^(−1/(2m−2)) inside branches",
        needs: "residual blocks (L, m)",
        params: "--fan-mode",
        paper: "Zhang, Dauphin & Ma, Fixup Initialization, ICLR 2019",
    },
    Entry {
        name: "lsuv",
        summary: "orthonormal pre-init, then each layer rescaled until its output variance on a data batch is 1 (forward passes with the candle executor, embedded or external weights alike; the report gives each layer's variance and iterations)",
        needs: "data: --calibration-data FILE (.npy/.npz), else the task `reinit verify` would use",
        params: "—",
        paper: "Mishkin & Matas, All you need is a good init, ICLR 2016",
    },
    Entry {
        name: "auto",
        summary: "per layer: idinit in residual branches, relu-share (orthogonal submatrix) on plain ReLU chains, critical before tanh, delta-orthogonal for convs, orthogonal elsewhere",
        needs: "the analysis",
        params: "any of the above",
        paper: "—",
    },
];

pub fn run(args: SchemesArgs) -> Result<(), Error> {
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(CATALOG).unwrap_or_default()
        );
        return Ok(());
    }
    for e in CATALOG {
        println!(
            "{}\n  {}\n  needs:  {}\n  params: {}\n  paper:  {}\n",
            e.name, e.summary, e.needs, e.params, e.paper
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn catalog_lists_every_scheme() {
        for name in reinit_schemes::SCHEME_NAMES {
            assert!(
                super::CATALOG.iter().any(|e| e.name == name),
                "{name} missing from `reinit schemes`"
            );
        }
    }
}
