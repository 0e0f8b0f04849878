//! Einsum of one or two operands, the forms exporters write for attention and
//! bilinear layers ("bij,bjk->bik", "bhid,bhjd->bhij", "ij,jk->ik", "...ij,...jk",
//! transposes and sums), as permute + reshape + one batched matmul so the
//! gradient is candle's. Diagonals (a letter twice in one operand) and three or
//! more operands are refused with the equation in the message.

use candle_core::Tensor;

use super::{Op, OpArgs, OpResult, Registry};
use crate::error::OpError;

pub fn register(r: &mut Registry) {
    r.insert(Op::Einsum, einsum);
}

/// The operands' and the output's subscripts, ellipses expanded to letters
/// (upper-case, which the equation itself does not use for them).
struct Equation {
    inputs: Vec<Vec<char>>,
    output: Vec<char>,
}

fn parse(eq: &str, ranks: &[usize]) -> Result<Equation, OpError> {
    let eq: String = eq.chars().filter(|c| !c.is_whitespace()).collect();
    let (lhs, rhs) = match eq.split_once("->") {
        Some((l, r)) => (l.to_string(), Some(r.to_string())),
        None => (eq.clone(), None),
    };
    let terms: Vec<&str> = lhs.split(',').collect();
    if terms.len() != ranks.len() {
        return Err(OpError(format!(
            "equation `{eq}` names {} operands, the node has {}",
            terms.len(),
            ranks.len()
        )));
    }
    // Ellipsis letters: the broadcast dims, the same letters in every term.
    let too_short = |t: &str, rank: usize| {
        OpError(format!(
            "subscripts `{t}` do not fit an operand of rank {rank}"
        ))
    };
    let mut ell_rank = 0;
    for (t, &r) in terms.iter().zip(ranks) {
        if t.contains("...") {
            let n = (r + 3)
                .checked_sub(t.chars().count())
                .ok_or_else(|| too_short(t, r))?;
            ell_rank = ell_rank.max(n);
        }
    }
    let ell: Vec<char> = ('A'..='Z').take(ell_rank).collect();
    let expand = |t: &str, rank: usize| -> Result<Vec<char>, OpError> {
        let mut out = Vec::new();
        if let Some((a, b)) = t.split_once("...") {
            let n = (rank + 3)
                .checked_sub(t.chars().count())
                .filter(|&n| n <= ell_rank)
                .ok_or_else(|| too_short(t, rank))?;
            out.extend(a.chars());
            out.extend(&ell[ell_rank - n..]);
            out.extend(b.chars());
        } else {
            out.extend(t.chars());
        }
        if out.len() != rank || out.iter().any(|c| !c.is_ascii_alphabetic()) {
            return Err(too_short(t, rank));
        }
        Ok(out)
    };
    let inputs = terms
        .iter()
        .zip(ranks)
        .map(|(t, &r)| expand(t, r))
        .collect::<Result<Vec<_>, _>>()?;
    let output = match rhs {
        Some(r) => {
            let rank = if r.contains("...") {
                (r.chars().count() + ell_rank).saturating_sub(3)
            } else {
                r.chars().count()
            };
            expand(&r, rank)?
        }
        None => {
            // Implicit output: ellipsis, then letters used once, alphabetically.
            let mut once: Vec<char> = Vec::new();
            let all: Vec<char> = inputs.iter().flatten().copied().collect();
            for &c in &all {
                if c.is_ascii_lowercase() && all.iter().filter(|&&x| x == c).count() == 1 {
                    once.push(c);
                }
            }
            once.sort_unstable();
            let mut out = ell.clone();
            out.extend(once);
            out
        }
    };
    Ok(Equation { inputs, output })
}

fn has_repeat(s: &[char]) -> bool {
    s.iter().enumerate().any(|(i, c)| s[i + 1..].contains(c))
}

/// Sums away the letters of `s` not in `keep`.
fn sum_out(t: Tensor, s: &[char], keep: &[char]) -> Result<(Tensor, Vec<char>), OpError> {
    let mut t = t;
    let mut s = s.to_vec();
    for i in (0..s.len()).rev() {
        if !keep.contains(&s[i]) {
            t = t.sum(i)?;
            s.remove(i);
        }
    }
    Ok((t, s))
}

/// Permutes `t` (subscripts `s`) into the order `want`.
fn permute_to(t: &Tensor, s: &[char], want: &[char]) -> Result<Tensor, OpError> {
    let perm: Vec<usize> = want
        .iter()
        .map(|c| s.iter().position(|x| x == c).unwrap_or(0))
        .collect();
    if perm.iter().enumerate().all(|(i, &p)| i == p) {
        return Ok(t.clone());
    }
    Ok(t.permute(perm)?)
}

fn einsum(args: &OpArgs) -> OpResult {
    let eq_text = args.attr_s("equation").unwrap_or_default();
    let ops: Vec<Tensor> = (0..args.inputs.len())
        .map(|i| args.input(i).and_then(|t| args.float(t)))
        .collect::<Result<_, _>>()?;
    let ranks: Vec<usize> = ops.iter().map(Tensor::rank).collect();
    let eq = parse(&eq_text, &ranks)?;
    if eq.inputs.len() > 2 || eq.inputs.iter().any(|s| has_repeat(s)) || has_repeat(&eq.output) {
        return Err(OpError(format!(
            "Einsum `{eq_text}`: only one or two operands without repeated subscripts are supported"
        )));
    }
    let out = &eq.output;
    if eq.inputs.len() == 1 {
        let (t, s) = sum_out(ops[0].clone(), &eq.inputs[0], out)?;
        return Ok(vec![permute_to(&t, &s, out)?.contiguous()?]);
    }
    let (sa, sb) = (&eq.inputs[0], &eq.inputs[1]);
    // A letter only one operand has and the output lacks is summed first.
    let keep_a: Vec<char> = sa
        .iter()
        .copied()
        .filter(|c| out.contains(c) || sb.contains(c))
        .collect();
    let keep_b: Vec<char> = sb
        .iter()
        .copied()
        .filter(|c| out.contains(c) || sa.contains(c))
        .collect();
    let (a, sa) = sum_out(ops[0].clone(), sa, &keep_a)?;
    let (b, sb) = sum_out(ops[1].clone(), sb, &keep_b)?;
    let batch: Vec<char> = out
        .iter()
        .copied()
        .filter(|c| sa.contains(c) && sb.contains(c))
        .collect();
    let contract: Vec<char> = sa
        .iter()
        .copied()
        .filter(|c| sb.contains(c) && !out.contains(c))
        .collect();
    let left: Vec<char> = sa.iter().copied().filter(|c| !sb.contains(c)).collect();
    let right: Vec<char> = sb.iter().copied().filter(|c| !sa.contains(c)).collect();
    let size = |c: char| -> usize {
        let in_a = sa.iter().position(|&x| x == c).map(|i| a.dims()[i]);
        let in_b = sb.iter().position(|&x| x == c).map(|i| b.dims()[i]);
        in_a.into_iter().chain(in_b).max().unwrap_or(1)
    };
    let prod = |cs: &[char]| cs.iter().map(|&c| size(c)).product::<usize>();
    let (nb, nl, nc, nr) = (prod(&batch), prod(&left), prod(&contract), prod(&right));
    // Broadcast size-1 batch/contracted dims (the ellipsis' numpy rule).
    let order_a: Vec<char> = [&batch[..], &left[..], &contract[..]].concat();
    let order_b: Vec<char> = [&batch[..], &contract[..], &right[..]].concat();
    let full = |cs: &[char]| cs.iter().map(|&c| size(c)).collect::<Vec<_>>();
    let a = permute_to(&a, &sa, &order_a)?
        .broadcast_as(full(&order_a))?
        .contiguous()?
        .reshape((nb, nl, nc))?;
    let b = permute_to(&b, &sb, &order_b)?
        .broadcast_as(full(&order_b))?
        .contiguous()?
        .reshape((nb, nc, nr))?;
    let y = a.matmul(&b)?;
    let y_letters: Vec<char> = [&batch[..], &left[..], &right[..]].concat();
    let y = y.reshape(full(&y_letters))?;
    Ok(vec![permute_to(&y, &y_letters, out)?.contiguous()?])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equations_expand_ellipses_and_implicit_outputs() {
        let e = parse("...ij,...jk->...ik", &[4, 3]).unwrap();
        assert_eq!(e.inputs[0], vec!['A', 'B', 'i', 'j']);
        assert_eq!(e.inputs[1], vec!['B', 'j', 'k']);
        assert_eq!(e.output, vec!['A', 'B', 'i', 'k']);
        let e = parse("ij,jk", &[2, 2]).unwrap();
        assert_eq!(e.output, vec!['i', 'k']);
        assert!(parse("ij,jk->ik", &[2]).is_err());
        assert!(parse("ijk,jk->ik", &[2, 2]).is_err());
    }
}
