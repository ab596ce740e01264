import Foundation
import LoRAFuse
import LoRAFuseModels

/// How LoRAs are combined: a content/style method (`FusionMethod`) or AutoLoRA's learned
/// gates over any number of LoRAs. `init?(name:)` reads the names the command line uses.
public enum FusionKind: Sendable, Hashable, CustomStringConvertible {
    case pair(FusionMethod)
    case autolora

    /// The kind a command-line name (`klora`, `merge`, `autolora`, …) stands for.
    public init?(name: String) {
        if name == "autolora" {
            self = .autolora
        } else if let method = FusionMethod(rawValue: name) {
            self = .pair(method)
        } else {
            return nil
        }
    }

    public var description: String {
        switch self {
        case let .pair(method): method.rawValue
        case .autolora: "autolora"
        }
    }

    public static var allNames: [String] { FusionMethod.allCases.map(\.rawValue) + ["autolora"] }
}

/// What a sampling run applies at each step: the forward passes (one transformer each,
/// their predictions averaged) and a key that is equal exactly when two steps run the same
/// graphs — the same model, the same LoRA files at the same scales on the same layers. A
/// pipeline builds one set of graphs per distinct key: a K-LoRA run builds as many as it
/// has distinct layer selections, not one per step.
public struct FusionPlan: Sendable {
    /// One step's passes and their key.
    public struct Step: Sendable {
        public let key: StepKey
        public let passes: [FluxTransformer]
    }

    /// The layer selection of a step's passes (see `FusionPlan`).
    public struct StepKey: Sendable, Hashable {
        struct Part: Sendable, Hashable {
            let set: WeightSet.ID
            let scale: Float
            let layers: [String]
        }
        let passes: [[Part]]

        init(_ transformers: [FluxTransformer]) {
            passes = transformers.map { transformer in
                var parts = [Part(set: transformer.model.weightSet.id, scale: 1, layers: [])]
                for adapter in transformer.adapters where adapter.scale != 0 {
                    parts.append(Part(set: adapter.file.weightSet.id, scale: adapter.scale, layers: adapter.file.modules.map(\.layer).sorted()))
                }
                if let autolora = transformer.autolora { parts.append(Part(set: autolora.weightSet.id, scale: 1, layers: [])) }
                return parts
            }
        }
    }

    /// Seconds spent merging LoRAs into the weights, when they were merged.
    public let mergeSeconds: Double?
    /// Every step runs the same passes.
    public let isStatic: Bool
    private let passes: @Sendable (_ progress: Double, _ step: Int, _ steps: Int) -> [FluxTransformer]

    private init(mergeSeconds: Double? = nil, isStatic: Bool, passes: @escaping @Sendable (Double, Int, Int) -> [FluxTransformer]) {
        self.mergeSeconds = mergeSeconds
        self.isStatic = isStatic
        self.passes = passes
    }

    /// The passes at `step` of a `steps`-step run; progress p = step / steps (0 at pure noise).
    public func step(_ step: Int, of steps: Int) -> Step {
        self.step(progress: Double(step) / Double(max(1, steps)), step: step, of: steps)
    }

    /// The passes at sampling progress `progress` (step / steps), step `step` counting from 0
    /// of `steps` (methods that count steps use `step`, the others `progress`).
    public func step(progress: Double, step: Int, of steps: Int) -> Step {
        let transformers = passes(progress, step, steps)
        return Step(key: StepKey(transformers), passes: transformers)
    }

    /// The LoRAs applied hot (a `lowRankUpdate` per Linear they touch), or merged into the
    /// weights on `backend` once (`merge`).
    public static func plain(model: FluxModel, adapters: [LoRAAdapter], merge: Bool = false, on backend: any Backend) throws -> FusionPlan {
        guard merge, !adapters.isEmpty else {
            let pass = FluxTransformer(model: model, adapters: adapters)
            return FusionPlan(isStatic: true) { _, _, _ in [pass] }
        }
        let start = DispatchTime.now().uptimeNanoseconds
        let pass = FluxTransformer(model: try model.merging(adapters, on: backend))
        return FusionPlan(mergeSeconds: Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9, isStatic: true) { _, _, _ in [pass] }
    }

    /// AutoLoRA: `adapters` (1 to 8) gated by `mergers` on every layer with a merger.
    public static func autolora(model: FluxModel, adapters: [LoRAAdapter], mergers: AutoLoRAMergers) throws -> FusionPlan {
        let pass = FluxTransformer(model: model, autolora: try AutoLoRAFusion(mergers: mergers, adapters: adapters, config: model.config))
        return FusionPlan(isStatic: true) { _, _, _ in [pass] }
    }

    /// A content/style fusion, with `adapters` applied hot beside it at every step. K-LoRA
    /// without a plan in `fusion.klora` (EST-LoRA without one in `fusion.estlora`) is planned
    /// here on `backend` (cached on disk by the planner) with `klora`'s (`estlora`'s)
    /// schedule; `merge` goes with `.merge` only.
    public static func pair(model: FluxModel, fusion: LoRAFusion, adapters: [LoRAAdapter] = [], merge: Bool = false,
                            klora schedule: (alpha: Double, beta: Double, schedule: KLoRAPlan.Schedule) = (1.5, 0.5, .linear),
                            estlora estSchedule: (alpha: Double, beta: Double, schedule: ESTLoRAPlan.Schedule) =
                                (ESTLoRAPlan.defaultAlpha, ESTLoRAPlan.Schedule.periodic.defaultBeta(), .periodic),
                            on backend: any Backend) throws -> FusionPlan {
        guard !merge || fusion.method == .merge else {
            throw FusionError.invalidOption("merging goes only with the merge method (the others choose LoRAs per step)")
        }
        var chosen = fusion
        if chosen.method == .klora && chosen.klora == nil {
            let plan = try KLoRAPlanner(backend: backend).plan(content: fusion.content.file, style: fusion.style.file, config: model.config)
            var klora = KLoRAFusion(plan: plan, content: fusion.content, style: fusion.style)
            (klora.alpha, klora.beta, klora.schedule) = schedule
            chosen.klora = klora
        }
        if chosen.method == .estlora && chosen.estlora == nil {
            let plan = try ESTLoRAPlanner(backend: backend).plan(content: fusion.content.file, style: fusion.style.file, config: model.config)
            var estlora = ESTLoRAFusion(plan: plan, content: fusion.content, style: fusion.style)
            (estlora.alpha, estlora.beta, estlora.schedule) = estSchedule
            chosen.estlora = estlora
        }
        if chosen.method == .merge {
            return try plain(model: model, adapters: adapters + chosen.passes(progress: 0, step: 0, steps: 1)[0], merge: merge, on: backend)
        }
        let fixed = chosen
        return FusionPlan(isStatic: false) { progress, step, steps in
            fixed.passes(progress: progress, step: step, steps: steps).map { FluxTransformer(model: model, adapters: adapters + $0) }
        }
    }
}
