"""The paper's numbers and findings, in one place.

Torre, Viscione, Pompe, Grewe & Mante, *Mechanistic Interpretability of RNNs emulating
Hidden Markov Models*, NeurIPS 2025 (arXiv:2510.25674); below "the paper". Chapters and the
reproduction report compare ours against these and never type a paper value themselves:
a claim of kind "paper" names its value by an expression in this module's namespace
(``paper_ref``, e.g. ``BEST_VAL_LOSS["linear2"]``; :mod:`hmmrnn.report` evaluates it).
Every entry names where in the paper it comes from: the target definitions and training
recipe (its Methods and appendix), the fit-quality figure, and its results on global
dynamics (fixed point, orbit PCA), the training bifurcation, local dynamics (clusters,
kick-zones, transitions), kick neurons and interventions, stochastic resonance and
compositionality. Ranges are ``(low, high)`` tuples; a qualitative finding is a bool (or a
label) stated in the paper's words.
"""

from __future__ import annotations

# Targets (Methods): exact emission statistics, as the paper rounds them
LABILITY = {"linear2": 0.0688, "linear3": 0.2562, "linear4": 0.2978, "linear5": 0.3112, "fully3": 0.0864, "cyclic4": 0.2143}
MARGINALS = {
    "linear2": (0.495, 0.01, 0.495),
    "linear3": (0.495, 0.01, 0.495),
    "linear4": (0.495, 0.01, 0.495),
    "linear5": (0.495, 0.01, 0.495),
    "fully3": (1 / 3, 1 / 3, 1 / 3),
    "cyclic4": (0.25, 0.50, 0.25),
}
OUTPUT_TRANSITION_FIRST_ROW_LINEAR2 = (0.9405, 0.01, 0.0495)
OUTPUT_TRANSITION_MIDDLE_ROW_LINEAR = (0.495, 0.01, 0.495)

# Training recipe (Methods, appendix on training); best validation losses as printed (1 decimal)
SEQ_LEN = {"linear2": 100, "linear3": 30, "linear4": 30, "linear5": 40, "fully3": 30, "cyclic4": 40}
GRAD_CLIP = {"linear2": 0.9, "linear3": 0.9, "linear4": 0.9, "linear5": 0.9, "fully3": 0.3, "cyclic4": 0.3}
EPOCHS = {"linear2": 500, "linear3": 500, "linear4": 500, "linear5": 500, "fully3": 1000, "cyclic4": 1000}
BEST_VAL_LOSS = {
    "linear2": (9.6, 10.1),
    "linear3": (4.0, 4.1),
    "linear4": (4.5, 4.7),
    "linear5": (7.6, 7.9),
    "fully3": (1.8, 1.9),
    "cyclic4": (5.5, 5.5),
}

# Re-seeding (not in the paper's text: the authors' run folders, ../shared/PAPER.md section 3). Each slot of
# the five-state grid holds a file seed_N.txt naming the seed that was finally used; slots were filled in
# increasing order. Keys (target, |h|, d); values: the seeds of the three slots of that cell.
RESEED_SEEDS = {
    ("linear5", 150, 100): (4, 19, 20),
    ("linear5", 200, 100): (19, 29, 38),
    ("linear5", 150, 1): (4, 8, 9),
    ("linear5", 50, 10): (3, 4, 5),
}

# Fit quality (the figure on emission statistics: transition-matrix errors, marginals, lability, matched distance)
TRANSITION_ERROR_MAX = 0.02  # worst squared entry of the output transition-matrix error
MARGINAL_TOLERANCE = 0.03  # the fit bar of this book for the frequent outputs (issue 2)
MATCHED_DISTANCE_BASELINE_L100 = {"linear2": 4.551, "linear3": 7.285, "linear4": 7.513, "linear5": 7.519}
MATCHED_DISTANCE_WORST_D1 = {"linear2": 4.747}  # |h| = 50, d = 1
RARE_COLUMN_SQUARED_ERROR = {"linear2": 1.1e-4, "linear3": 1.1e-4, "linear4": 0.7e-4, "linear5": 0.9e-4}

# The fit-quality grid (its figure on fit quality: every linear chain over |h| and d, 3 seeds per cell)
GRID_TARGETS = ("linear2", "linear3", "linear4", "linear5")  # M = 2..5
GRID_HIDDEN = (50, 150, 200)  # |h|
GRID_INPUT = (1, 10, 100, 200)  # d
GRID_SEEDS = 3  # networks per cell (|h|, d) of each M
GRID_ERRORS_ALMOST_ALL_ZERO_D_GE_10 = True  # "almost all 0.00 for d >= 10" (squared transition-matrix errors, 2 decimals)
GRID_MATCHED_AT_OR_BELOW_BASELINE_D_GE_10 = True  # "RNNs with d >= 10 are at or below the baseline"
GRID_MATCHED_WORST_AT_D1 = True  # "d = 1 is worst" (the matched distance, across d)
GRID_WORST_CELL = ("linear4", 150, 1)  # the largest error, 0.02: M = 4, |h| = 150, d = 1 (a failed seed)

# Global dynamics (results: the fixed point without input, the orbit and its PCA, readout alignment)
PCA_VARIANCE = {  # percent explained by PC1, PC2 (PC3 where given)
    "linear2": (56.3, 13.6),
    "linear3": (53.0, 16.0),
    "linear4": (49.0, 17.0),
    "linear5": (44.9, 15.4),
    "fully3": (53.6, 26.7, 6.8),
    "cyclic4": (42.8, 27.6),
}
READOUT_ALIGNMENT = {"linear2": 0.51, "linear3": 0.32, "linear4": 0.27, "linear5": 0.27}
NOISE_STDS_OF_THE_CODE = (0.1, 1.0, 2.0, 3.0, 4.0)
SINGLE_FIXED_POINT = True  # "in the absence of inputs, the activity ... collapses towards a single fixed point"
ONE_WAY_ROTATION = True  # the closed orbit is traversed in one sense (rotation along the orbit)
RADIUS_LAW = "variance"  # "orbit radius scales linearly with input variance" (its code varies the std)
ALIGNMENT_FALLS_WITH_M = True  # READOUT_ALIGNMENT falls from 0.51 (M = 2) to 0.27 (M = 5)

# Training dynamics (results: the bifurcation during training, from snapshots)
RATE_BEFORE_BIFURCATION = (0.55, 0.8)
RATE_AFTER_BIFURCATION = {"linear2": 0.05, "linear3": 0.11, "linear4": 0.11, "linear5": 0.08}
BIFURCATION_EPOCH = {"linear2": 60, "linear3": 50, "linear4": 100, "linear5": (330, 350)}
BIFURCATION_OCCURS = True  # "training undergoes a marked phase transition": the switching rate drops abruptly
LOSS_DROP_AT_BIFURCATION = True  # the loss shows a secondary drop at the bifurcation
UNSTABLE_SPIKE_AT_BIFURCATION = True  # the fraction of steps with an unstable eigenvalue spikes there
COMPLEX_PAIRS_APPEAR_AT_BIFURCATION = True  # near-critical complex eigenvalue pairs appear there

# Local dynamics (results: residency times, clusters / kick-zones / transitions, noise sensitivity)
RT_THRESHOLDS = {"transition_below": 2, "kick_zone_max": 8, "cluster_confidence": 0.8}
SIGN_CHANGES = {"cluster": (5, 20), "kick_zone": (2, 4), "transition_below": 1}
UNSTABLE_EIGS_CLUSTER = (0.1, 0.2)
KICK_ZONES_MORE_UNSTABLE = True  # kick-zones have "a small number of unstable directions", clusters almost none
CLUSTERS_MORE_NOISE_SENSITIVE = True  # clusters are noise-sensitive, transitions noise-insensitive
NOISE_SENSITIVITY_GAMMA1 = {"cluster": (31, 53), "transition": (27, 40), "linear2": {"cluster": 45.3, "transition": 28.5}}

# Kick neurons and the noise-accumulation population (results: connectivity, interventions)
KICK_GROUPS_LINEAR2 = 2
KICK_GROUP_SIZE = 3
KICK_PREACTIVATION_RANGE = (-6.0, 8.0)
KICK_PROFILE = True  # pre-activation strongly negative in clusters, near zero in kick-zones, positive in transitions
KICK_TRIPLETS_BLOCK_SWITCHING = True  # the triplets were found as 3-neuron sets whose silencing stops the switching
NOISE_POPULATION_SIZE = 70
COMPLEX_PAIRS_NOMINAL = (6, 9)
COMPLEX_PAIRS_ABLATED = (1.5, 5)
KICK_WITHIN_EXCITATION = True  # excitation within a triplet
KICK_BETWEEN_INHIBITION = True  # inhibition between the triplets
KICK_ABLATION_TRAPS = True  # kick neurons mu = 0: trajectories stay trapped in their cluster
KICK_AMPLIFICATION_OVERSHOOTS = True  # kick neurons mu = 2: trajectories overshoot past the target cluster
NOISE_INPUT_ABLATION_TRAPS = True  # noise-accumulation population's input mu = 0: trapped as well
CONTROL_POPULATION_UNCHANGED = True  # a control population of the same kind: switching unchanged
MODULATION_RANGE = (0.0, 2.0)  # the modulation factor mu swept; mu = 1 is the nominal network

# Stochastic resonance (discussion of the mechanism; the paper names it, it draws no resonance curve)
SISR_CLAIMED = True  # "a form of self-induced stochastic resonance": noise alone, quasi-periodic switching
QUASI_PERIODIC_CLAIMED = True  # "noise alone drives quasi-periodic switching" (slow accumulation, fast kick)

# Compositionality (results on the fully connected and cyclic HMMs)
SUBSPACE_PC1_RANGE = (64.0, 86.0)
FULLY3_KICK_GROUPS = 3  # "the fully connected network has three kick groups"
PAIR_REGIONS = True  # each pair of outputs shows its own orbit with cluster / kick-zone / transition structure
FULLY3_KICK_GROUP_PER_PAIR = True  # three kick groups for three pairs of outputs: one per pair

# Fit quality, qualitative: every trained network reproduces the emission statistics (errors 0.00-0.02)
EMISSIONS_REPRODUCED = True
