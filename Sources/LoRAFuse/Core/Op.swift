/// Element-wise functions of one tensor.
public enum UnaryFunction: String, Sendable, Hashable, CaseIterable {
    /// GELU with the exact erf form: x·Φ(x).
    case gelu
    /// GELU with the tanh approximation (FLUX's MLPs, T5's gated GELU).
    case geluTanh
    /// x·sigmoid(1.702·x), CLIP's activation.
    case quickGelu
    case silu
    case sigmoid
    case relu
    case tanh
}

/// Element-wise functions of two tensors, with numpy broadcasting.
public enum BinaryOperator: String, Sendable, Hashable, CaseIterable {
    case add, sub, mul, div
}

/// The graph's operations: a small explicit set that covers the FLUX transformer,
/// BERT/CLIP/T5-style text encoders and LoRA math. Every backend implements all of them
/// (or reports the ones it lacks through its capabilities).
public enum Op: Sendable, Hashable {
    /// A tensor supplied at execution time, by name.
    case input(name: String)
    /// A weight bound to the graph (usually a view into a mapped safetensors file);
    /// backends may keep it resident between executions.
    case parameter(name: String)
    /// `a · b` over the last two axes, batch axes broadcast. `transposeA` reads `a` as
    /// [..., K, M]; `transposeB` reads `b` as [..., N, K] (PyTorch `Linear` weights).
    /// `a` is float32; `b` may be float32, float16, bfloat16 or float8 (converted in the kernel).
    case matmul(transposeA: Bool, transposeB: Bool)
    /// A LoRA path added to a Linear's output: inputs `y` [..., N], `x` [..., K], `down`
    /// [r, K], `up` [N, r] give `y + scale · (x · downᵀ) · upᵀ`. One op so kernels keep the
    /// rank-r intermediate on chip; `down` and `up` may be float32, float16 or bfloat16.
    case lowRankUpdate(scale: Float)
    /// K-LoRA's magnitude statistics of the entries of all inputs taken as one set (any
    /// shapes, float32): output [2] = [sum of the `k` largest |x|, sum of all |x|]. Exact
    /// (a selection, not an approximation); ties count as often as they occur.
    case topKAbsSum(k: Int)
    /// `topKAbsSum` of LoRA updates that are never stored: inputs up₁, down₁, up₂, down₂, …
    /// (up [out, r], down [r, in], F32/F16/BF16) give ΔWᵢ = scalesᵢ · upᵢ · downᵢ, and the
    /// output [2] = [Σ of the `k` largest |ΔW| over all of them, Σ |ΔW|]. A full-size FLUX
    /// layer's ΔW is up to 151 MB; backends may compute it in tiles.
    case lowRankTopKAbsSum(k: Int, scales: [Float])
    /// AutoLoRA's fused LoRA gate (DiffSynth `LoraMerger`): inputs y₀ [..., D], the merger's
    /// parameters [9, D] (rows: weight_base, weight_lora, weight_cross, weight_out, bias,
    /// norm_base weight and bias, norm_lora weight and bias) and the LoRA outputs d₁…d_N
    /// [..., D] (N = 1…8). gᵢ = σ(w_b⊙LN_b(y₀) + w_l⊙LN_l(dᵢ) + w_c⊙LN_b(y₀)⊙LN_l(dᵢ) + bias),
    /// output y₀ + Σᵢ w_out⊙gᵢ⊙dᵢ; LayerNorms over the last axis with `epsilon`.
    case loraGate(epsilon: Float)
    /// `loraGate` with the LoRA outputs formed inside from their rank-space activations, so
    /// no dᵢ reaches memory: inputs y₀ [..., D], parameters [9, D], u [..., R₁+…+R_N] (the
    /// LoRAs' down projections x·Aᵢᵀ side by side) and up [D, R₁+…+R_N] (their Bᵢ, scales
    /// folded in), float32; dᵢ = u[:, Rᵢ's columns] · up[:, Rᵢ's columns]ᵀ, `ranks` = [R₁…R_N]
    /// (N = 1…8). Zeros in `up` (the parts of a fused q/k/v a LoRA misses) may be skipped.
    case lowRankGate(epsilon: Float, ranks: [Int])
    case binary(BinaryOperator)
    /// `x · factor`.
    case scale(Float)
    case unary(UnaryFunction)
    /// Softmax over the last axis.
    case softmax
    /// LayerNorm over the last axis; inputs `x` or `x, weight, bias`.
    case layerNorm(epsilon: Float)
    /// RMSNorm over the last axis (no mean subtraction); inputs `x` or `x, weight`.
    case rmsNorm(epsilon: Float)
    /// FLUX's rotary embedding on `x` [B, L, H, D] with `cos`, `sin` [L, D/2]: each pair
    /// (x[2i], x[2i+1]) is rotated by the angle of frequency i (diffusers
    /// `apply_rotary_emb` with `use_real_unbind_dim=-1`).
    case rotaryEmbedding
    /// Scaled dot-product attention on `q` [B, Lq, H, D], `k`, `v` [B, Lk, H, D] giving
    /// [B, Lq, H, D]; an optional 4th input is an additive mask [Lq, Lk] or [B|1, H|1, Lq, Lk].
    case attention(scale: Float, causal: Bool)
    /// 2-D convolution, stride 1: `x` [B, C, H, W], `weight` [O, C, kh, kw] (F32, F16, BF16
    /// or F8, converted in the kernel), optional `bias` [O] → [B, O, H + 2p − kh + 1, W + 2p − kw + 1],
    /// zeros outside the image (PyTorch `Conv2d(padding=p)`).
    case conv2d(padding: Int)
    case reshape(Shape)
    case permute([Int])
    /// Elements `start..<end` along `axis`.
    case slice(axis: Int, start: Int, end: Int)
    case concat(axis: Int)
    /// Rows of `table` [V, D] picked by integer `ids` [...], giving [..., D].
    case embedding
    case cast(DType)

    /// The op's family name, as capabilities and reports list it.
    public var kind: OpKind {
        switch self {
        case .input: .input
        case .parameter: .parameter
        case .matmul: .matmul
        case .lowRankUpdate: .lowRankUpdate
        case .topKAbsSum: .topKAbsSum
        case .lowRankTopKAbsSum: .lowRankTopKAbsSum
        case .loraGate: .loraGate
        case .lowRankGate: .lowRankGate
        case .binary: .binary
        case .scale: .scale
        case .unary: .unary
        case .softmax: .softmax
        case .layerNorm: .layerNorm
        case .rmsNorm: .rmsNorm
        case .rotaryEmbedding: .rotaryEmbedding
        case .attention: .attention
        case .conv2d: .conv2d
        case .reshape: .reshape
        case .permute: .permute
        case .slice: .slice
        case .concat: .concat
        case .embedding: .embedding
        case .cast: .cast
        }
    }

    /// A short human-readable form, e.g. `matmul(bᵀ)`.
    public var summary: String {
        switch self {
        case let .input(name): "input '\(name)'"
        case let .parameter(name): "parameter '\(name)'"
        case let .matmul(ta, tb): "matmul" + (ta || tb ? "(" + [ta ? "aᵀ" : nil, tb ? "bᵀ" : nil].compactMap { $0 }.joined(separator: ",") + ")" : "")
        case let .lowRankUpdate(scale): "lowRankUpdate(scale \(scale))"
        case let .topKAbsSum(k): "topKAbsSum(k \(k))"
        case let .lowRankTopKAbsSum(k, scales): "lowRankTopKAbsSum(k \(k), \(scales.count) part(s))"
        case let .loraGate(epsilon): "loraGate(eps \(epsilon))"
        case let .lowRankGate(epsilon, ranks): "lowRankGate(eps \(epsilon), ranks \(ranks))"
        case let .binary(op): op.rawValue
        case let .scale(factor): "scale(\(factor))"
        case let .unary(function): function.rawValue
        case .softmax: "softmax"
        case let .layerNorm(epsilon): "layerNorm(eps \(epsilon))"
        case let .rmsNorm(epsilon): "rmsNorm(eps \(epsilon))"
        case .rotaryEmbedding: "rotaryEmbedding"
        case let .attention(scale, causal): "attention(scale \(scale)\(causal ? ", causal" : ""))"
        case let .conv2d(padding): "conv2d(padding \(padding))"
        case let .reshape(shape): "reshape\(shape)"
        case let .permute(order): "permute\(order)"
        case let .slice(axis, start, end): "slice(axis \(axis), \(start)..<\(end))"
        case let .concat(axis): "concat(axis \(axis))"
        case .embedding: "embedding"
        case let .cast(dtype): "cast(\(dtype.name))"
        }
    }
}

/// Op families, for capability lists.
public enum OpKind: String, Sendable, Hashable, CaseIterable, Comparable {
    case input, parameter, matmul, lowRankUpdate, topKAbsSum, lowRankTopKAbsSum, loraGate, lowRankGate, binary, scale, unary, softmax, layerNorm, rmsNorm
    case rotaryEmbedding, attention, conv2d, reshape, permute, slice, concat, embedding, cast

    public static func < (lhs: OpKind, rhs: OpKind) -> Bool {
        allCases.firstIndex(of: lhs)! < allCases.firstIndex(of: rhs)!
    }
}
