import ArgumentParser
import Foundation
import LoRAFuse
import LoRAFuseModels
import LoRAFuseFusion
import LoRAFuseRetrieval
import LoRAFusePipeline
import LoRAFuseVerification
import LoRAFuseToyWorld

/// `lorafuse parity`: the FLUX graph on two backends, compared node by node.
struct ParityCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "parity",
        abstract: "Run a model's graph on two backends and report the relative error of every node.",
        discussion: "Names the first node whose relative error exceeds --tolerance; exits non-zero if any does."
    )

    @Option(name: .long, help: "Diffusers FLUX folder or BFL checkpoint.")
    var model: String

    @Option(name: .long, help: "A single file's config: diffusers' transformer/config.json (or a folder holding it).")
    var config: String?

    @Option(name: .long, help: "Input tensors (.safetensors), as for `lorafuse dit`.")
    var inputs: String

    @Option(name: .long, help: "Backend under test.")
    var backend = "vulkan"

    @Option(name: .long, help: "Reference backend.")
    var against = "cpu"

    @Option(name: .long, parsing: .unconditional, help: "Largest acceptable relative error (docs/contracts.md: 1e-4 for F32).")
    var tolerance = 1e-4

    @Option(name: .long, help: "Print every node (all), only nodes over the tolerance (failures), or a summary.")
    var show = "labelled"

    @Flag(name: .long, help: "One JSON object per node.")
    var json = false

    @OptionGroup var loraOptions: LoRAOptions

    func run() throws {
        let tested = try BackendRegistry.shared.makeScheduledBackend(named: backend)
        let reference = try BackendRegistry.shared.makeBackend(named: against)
        let flux = try FluxModel.load(path: model, config: config)
        let prepared = try FluxInputs(SafeTensorsFile(path: inputs).allTensors(), config: flux.config)
        // Merged weights are computed on the reference backend, so both run the same graph;
        // with several passes (LoRA Composite) the first is compared.
        let (passes, _) = try loraOptions.transformers(flux, backend: reference)
        let graph = try passes[0].graph(batch: prepared.batch, textLength: prepared.textLength, imageLength: prepared.imageLength)
        let options = ExecutionOptions(keepIntermediates: true)
        let actual = try tested.execute(graph, inputs: prepared.bindings, options: options).intermediates
        let expected = try reference.execute(graph, inputs: prepared.bindings, options: options).intermediates
        var firstFailure: Node?
        var worst = 0.0
        for node in graph.nodes {
            switch node.op {
            case .input, .parameter: continue
            default: break
            }
            guard let a = actual[node.id], let e = expected[node.id] else { continue }
            let error = relativeError(actual: a.floats(), expected: e.doubles())
            worst = max(worst, error)
            let failed = !(error <= tolerance)
            if failed && firstFailure == nil { firstFailure = node }
            let shown = show == "all" || (show == "failures" && failed) || (show == "labelled" && (node.label != nil || failed))
            guard shown else { continue }
            if json {
                print(try JSONOutput.line(["node": node.id, "op": node.op.summary, "label": node.label ?? "", "shape": node.type.shape.dimensions,
                                           "max_relative_error": error.isFinite ? error : -1, "pass": !failed]))
            } else {
                print(String(format: "%%%-5d %-32@ %-22@ %.3e %@", node.id, (node.label ?? node.op.summary) as NSString,
                             node.type.shape.description as NSString, error, failed ? "FAIL" : ""))
            }
        }
        let summary = "\(tested.name) (\(tested.device.name)) vs \(reference.name): \(graph.nodes.count) nodes, worst relative error \(String(format: "%.3e", worst))"
        if let firstFailure {
            let message = "\(summary); first node over \(tolerance): %\(firstFailure.id) \(firstFailure.label ?? firstFailure.op.summary) \(firstFailure.type.shape)"
            FileHandle.standardError.write(Data((message + "\n").utf8))
            throw ExitCode.failure
        }
        if !json { print(summary + ", all within \(tolerance)") }
    }
}
