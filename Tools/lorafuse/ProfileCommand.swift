import ArgumentParser
import Foundation
import LoRAFuse

/// `lorafuse profile`: times single kernels on a backend, best of `--repeat` runs.
struct ProfileCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "profile",
        abstract: "Time kernels (matmul, attention) on a backend and report GFLOP/s.",
        subcommands: [ProfileMatmulCommand.self, ProfileAttentionCommand.self]
    )
}

struct BackendOptions: ParsableArguments {
    @Option(name: .long, help: "Backend to run on (see `lorafuse backends`).")
    var backend = "cpu"

    @Option(name: .long, help: "Device index of that backend.")
    var device = 0

    func makeBackend() throws -> any Backend {
        try BackendRegistry.shared.makeBackend(named: backend, deviceIndex: device)
    }
}

struct ProfileOptions: ParsableArguments {
    @Option(name: .customLong("repeat"), help: "Timed runs after one warm-up run; the best is reported.")
    var repeatCount: Int = 5

    @Flag(name: .long, help: "Print one JSON object per measurement.")
    var json = false

    @Option(name: .long, help: "Seed for the random operands.")
    var seed: UInt64 = 1
}

/// Runs `graph` once to warm up, then `repeats` times, returning the best wall time.
func bestSeconds(_ backend: any Backend, _ graph: Graph, _ inputs: [String: HostTensor], repeats: Int) throws -> Double {
    _ = try backend.execute(graph, inputs: inputs)
    var best = Double.infinity
    for _ in 0..<max(1, repeats) {
        let start = DispatchTime.now().uptimeNanoseconds
        _ = try backend.execute(graph, inputs: inputs)
        best = min(best, Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
    }
    return best
}

func report(_ fields: [String: Any], json: Bool, text: String) throws {
    print(json ? try JSONOutput.line(fields) : text)
}

struct ProfileMatmulCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "matmul",
        abstract: "Time C[M,N] = A[M,K] · Wᵀ with W [N,K] stored as --dtype (a Linear layer)."
    )

    @Option(name: .long) var m = 1024
    @Option(name: .long) var n = 1024
    @Option(name: .long) var k = 1024
    @Option(name: .long, help: "Weight dtype: f32, f16 or bf16.") var dtype = "f32"
    @OptionGroup var backendOptions: BackendOptions
    @OptionGroup var options: ProfileOptions

    func run() throws {
        guard let weightType = DType(rawValue: dtype.uppercased()), DType.weightTypes.contains(weightType) else {
            throw ValidationError("--dtype must be f32, f16 or bf16, got '\(dtype)'")
        }
        guard m > 0, n > 0, k > 0 else { throw ValidationError("--m, --n and --k must be positive") }
        let backend = try backendOptions.makeBackend()
        var random = SeededRandom(seed: options.seed)
        var graph = Graph()
        let a = graph.input("a", [m, k])
        let w = graph.parameter("w", random.tensor([n, k], dtype: weightType))
        graph.markOutput(try graph.matmul(a, w, transposeB: true))
        let seconds = try bestSeconds(backend, graph, ["a": random.tensor([m, k])], repeats: options.repeatCount)
        let gflops = 2 * Double(m) * Double(n) * Double(k) / seconds / 1e9
        try report(["op": "matmul", "backend": backend.name, "device": backend.device.name, "m": m, "n": n, "k": k,
                    "dtype": weightType.name, "seconds": seconds, "gflops": gflops],
                   json: options.json,
                   text: String(format: "matmul %dx%dx%d %@ on %@: %.3f ms, %.1f GFLOP/s", m, n, k, weightType.name,
                                backend.name, seconds * 1e3, gflops))
    }
}

struct ProfileAttentionCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "attention",
        abstract: "Time softmax(Q·Kᵀ/√D)·V for L tokens and H heads of D (FLUX: L=4096, H=24, D=128)."
    )

    @Option(name: .long) var tokens = 1024
    @Option(name: .long) var heads = 24
    @Option(name: .customLong("head-dim")) var headDim = 128
    @OptionGroup var backendOptions: BackendOptions
    @OptionGroup var options: ProfileOptions

    func run() throws {
        guard tokens > 0, heads > 0, headDim > 0 else { throw ValidationError("sizes must be positive") }
        let backend = try backendOptions.makeBackend()
        var random = SeededRandom(seed: options.seed)
        var graph = Graph()
        let shape: Shape = [1, tokens, heads, headDim]
        let q = graph.input("q", shape), k = graph.input("k", shape), v = graph.input("v", shape)
        graph.markOutput(try graph.attention(query: q, key: k, value: v))
        let inputs = ["q": random.tensor(shape), "k": random.tensor(shape), "v": random.tensor(shape)]
        let seconds = try bestSeconds(backend, graph, inputs, repeats: options.repeatCount)
        // Two L×L×D products per head: the usual effective-FLOP count for attention.
        let gflops = 4 * Double(tokens) * Double(tokens) * Double(headDim) * Double(heads) / seconds / 1e9
        try report(["op": "attention", "backend": backend.name, "device": backend.device.name, "tokens": tokens,
                    "heads": heads, "head_dim": headDim, "seconds": seconds, "gflops": gflops],
                   json: options.json,
                   text: String(format: "attention L=%d H=%d D=%d on %@: %.3f ms, %.1f GFLOP/s", tokens, heads, headDim,
                                backend.name, seconds * 1e3, gflops))
    }
}
