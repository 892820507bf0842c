/*
 * An OPD loss plugin written in plain C against sdk/loss-abi/include/sod_loss.h.
 *
 * It computes what the Rust `opd` plugin computes with the GRPO settings it supports:
 *   advantage = grpo_weight * A_GRPO + c * (log pT - log pS_old)   on generated tokens,
 *   0 on prompt / tool output / padding and on sequences flagged SOD_LOSS_FLAG_INFRA_FAULT,
 * where A_GRPO is the reward minus its group's mean, divided by the group's population standard
 * deviation plus std_eps (unless normalize_std is false).
 * Settings: c (1), grpo_weight (1), normalize_std (true), std_eps (1e-6), min_group_size (1),
 * signal ("sampled", or "full": ABI version 2's full-distribution term, the reverse KL between the
 * student's and the teacher's next-token distributions at every generated position, which the host
 * computes and differentiates with weight c per token; the advantage is then grpo_weight * A_GRPO).
 * The overlong penalty, drop_truncated and the other divergences of the Rust plugin are not
 * implemented here.
 *
 * Build:  cc -std=c11 -O2 -shared -fPIC -I sdk/loss-abi/include \
 *             examples/c-loss-plugin/opd.c -o libsod_loss_c_opd.so -lm
 * Run:    sod loss ./libsod_loss_c_opd.so --batch BATCH.json --set c=0.5
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sod_loss.h"

typedef struct OpdConfig {
    double c;
    double grpo_weight;
    int normalize_std;
    double std_eps;
    uint32_t min_group_size;
    int full; /* signal = full */
} OpdConfig;

static int32_t fail(SodLossErrorBuf *error, int32_t status, const char *format, ...) {
    if (error != NULL && error->message != NULL && error->capacity > 0) {
        va_list args;
        va_start(args, format);
        vsnprintf(error->message, error->capacity, format, args);
        va_end(args);
    }
    return status;
}

static int parse_number(const char *text, double *out) {
    char *end = NULL;
    double value = strtod(text, &end);
    if (end == text || *end != '\0' || !isfinite(value)) {
        return 0;
    }
    *out = value;
    return 1;
}

static int parse_bool(const char *text, int *out) {
    if (strcmp(text, "true") == 0 || strcmp(text, "1") == 0) {
        *out = 1;
        return 1;
    }
    if (strcmp(text, "false") == 0 || strcmp(text, "0") == 0) {
        *out = 0;
        return 1;
    }
    return 0;
}

static int32_t opd_create(const SodLossSetting *settings, size_t num_settings, void **out_instance,
                          SodLossErrorBuf *error) {
    OpdConfig config = {1.0, 1.0, 1, 1e-6, 1, 0};
    for (size_t i = 0; i < num_settings; i++) {
        const char *key = settings[i].key;
        const char *value = settings[i].value;
        double number = 0.0;
        if (key == NULL || value == NULL) {
            return fail(error, SOD_LOSS_ERR_CONFIG, "setting %zu has a null key or value", i);
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(settings[j].key, key) == 0) {
                return fail(error, SOD_LOSS_ERR_CONFIG, "setting '%s' is given more than once", key);
            }
        }
        if (strcmp(key, "c") == 0 || strcmp(key, "grpo_weight") == 0 || strcmp(key, "std_eps") == 0) {
            if (!parse_number(value, &number)) {
                return fail(error, SOD_LOSS_ERR_CONFIG, "setting '%s' = '%s' is not a finite number",
                            key, value);
            }
            if (key[0] == 'c') {
                config.c = number;
            } else if (key[0] == 'g') {
                config.grpo_weight = number;
            } else {
                config.std_eps = number;
            }
        } else if (strcmp(key, "normalize_std") == 0) {
            if (!parse_bool(value, &config.normalize_std)) {
                return fail(error, SOD_LOSS_ERR_CONFIG, "setting '%s' = '%s' is not a boolean", key,
                            value);
            }
        } else if (strcmp(key, "signal") == 0) {
            if (strcmp(value, "sampled") == 0 || strcmp(value, "full") == 0) {
                config.full = strcmp(value, "full") == 0;
            } else {
                return fail(error, SOD_LOSS_ERR_CONFIG,
                            "setting 'signal' = '%s' must be one of sampled, full", value);
            }
        } else if (strcmp(key, "min_group_size") == 0) {
            if (!parse_number(value, &number) || number < 1 || number > 4294967295.0 ||
                number != floor(number)) {
                return fail(error, SOD_LOSS_ERR_CONFIG,
                            "setting 'min_group_size' = '%s' must be an integer >= 1", value);
            }
            config.min_group_size = (uint32_t)number;
        } else {
            return fail(error, SOD_LOSS_ERR_CONFIG,
                        "unknown setting '%s' for loss 'c-opd' (known settings: c, grpo_weight, "
                        "min_group_size, normalize_std, signal, std_eps)",
                        key);
        }
    }
    if (config.normalize_std ? !(config.std_eps > 0.0) : !(config.std_eps >= 0.0)) {
        return fail(error, SOD_LOSS_ERR_CONFIG, "setting 'std_eps' = %g is out of range",
                    config.std_eps);
    }
    OpdConfig *instance = malloc(sizeof *instance);
    if (instance == NULL) {
        return fail(error, SOD_LOSS_ERR_COMPUTE, "out of memory");
    }
    *instance = config;
    *out_instance = instance;
    return SOD_LOSS_OK;
}

static int32_t opd_requirements(const void *instance, SodLossRequirements *out, SodLossErrorBuf *error) {
    const OpdConfig *config = instance;
    (void)error;
    out->needs_teacher = config->c != 0.0;
    out->data_source = SOD_LOSS_DATA_ON_POLICY;
    out->min_group_size = config->min_group_size;
    out->reserved = 0;
    /* v2: ask the host for the reverse KL at every generated position when the signal is full. */
    out->divergence =
        config->full && config->c != 0.0 ? SOD_LOSS_DIVERGENCE_REVERSE_KL : SOD_LOSS_DIVERGENCE_NONE;
    out->top_k = 0;
    out->beta = 0.0;
    return SOD_LOSS_OK;
}

/* A sequence in group order: sorting by (group, reward) makes every sum independent of the
 * order of sequences in the batch, exactly as in the Rust plugins. */
typedef struct Member {
    uint32_t group;
    double reward;
    size_t seq;
} Member;

static int compare_members(const void *a, const void *b) {
    const Member *x = a;
    const Member *y = b;
    if (x->group != y->group) {
        return x->group < y->group ? -1 : 1;
    }
    return (x->reward > y->reward) - (x->reward < y->reward);
}

static int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a;
    double y = *(const double *)b;
    return (x > y) - (x < y);
}

static double sorted_sum(double *values, size_t count) {
    double sum = 0.0;
    qsort(values, count, sizeof *values, compare_doubles);
    for (size_t i = 0; i < count; i++) {
        sum += values[i];
    }
    return sum;
}

static void emit(const SodLossOutput *output, const char *name, double value) {
    if (output->emit_metric != NULL) {
        output->emit_metric(output->metric_ctx, name, value);
    }
}

static int32_t opd_compute(void *instance, const SodLossBatch *batch, const SodLossOutput *output,
                           SodLossErrorBuf *error) {
    const OpdConfig *config = instance;
    size_t sequences = (size_t)batch->num_sequences;
    int full = config->full && config->c != 0.0;
    if (config->c != 0.0 && batch->teacher_logprob == NULL) {
        return fail(error, SOD_LOSS_ERR_BATCH, "loss 'c-opd' needs teacher log-probs, but the batch has none");
    }
    if (full && (batch->divergence == NULL || output->divergence_weights == NULL)) {
        return fail(error, SOD_LOSS_ERR_BATCH, "loss 'c-opd' with signal = full needs the divergence");
    }
    Member *members = malloc((sequences + 1) * sizeof *members);
    double *outcome = calloc(sequences + 1, sizeof *outcome);
    double *per_seq = malloc((sequences + 1) * sizeof *per_seq);
    if (members == NULL || outcome == NULL || per_seq == NULL) {
        free(members);
        free(outcome);
        free(per_seq);
        return fail(error, SOD_LOSS_ERR_COMPUTE, "out of memory");
    }

    size_t used = 0;
    for (size_t seq = 0; seq < sequences; seq++) {
        if ((batch->flags[seq] & SOD_LOSS_FLAG_INFRA_FAULT) == 0) {
            members[used].group = batch->group[seq];
            members[used].reward = (double)batch->reward[seq];
            members[used].seq = seq;
            used++;
        }
    }
    qsort(members, used, sizeof *members, compare_members);
    size_t groups = 0, zero_variance_groups = 0;
    double reward_sum = 0.0;
    for (size_t start = 0; start < used;) {
        size_t end = start;
        double sum = 0.0, variance = 0.0;
        int all_equal = 1;
        while (end < used && members[end].group == members[start].group) {
            sum += members[end].reward;
            all_equal &= members[end].reward == members[start].reward;
            end++;
        }
        double n = (double)(end - start);
        double mean = sum / n;
        for (size_t i = start; i < end; i++) {
            variance += (members[i].reward - mean) * (members[i].reward - mean);
        }
        double std = sqrt(variance / n);
        double scale = config->normalize_std ? std + config->std_eps : 1.0;
        for (size_t i = start; i < end; i++) {
            double centred = members[i].reward - mean;
            outcome[members[i].seq] = scale > 0.0 ? centred / scale : 0.0;
        }
        groups++;
        zero_variance_groups += (size_t)all_equal;
        reward_sum += sum;
        start = end;
    }

    size_t kept = 0;
    uint64_t signal_tokens = 0;
    double *steps = malloc((sequences + 1) * sizeof *steps);
    if (steps == NULL) {
        free(members);
        free(outcome);
        free(per_seq);
        return fail(error, SOD_LOSS_ERR_COMPUTE, "out of memory");
    }
    for (size_t seq = 0; seq < sequences; seq++) {
        uint64_t begin = batch->seq_offsets[seq], end = batch->seq_offsets[seq + 1];
        if (batch->flags[seq] & SOD_LOSS_FLAG_INFRA_FAULT) {
            continue;
        }
        double base = config->grpo_weight * outcome[seq];
        double signal_sum = 0.0;
        double last_step = 0.0;
        for (uint64_t t = begin; t < end; t++) {
            if (batch->mask[t] == 0) {
                continue;
            }
            last_step = (double)batch->step_index[t] + 1.0;
            if (batch->teacher_logprob == NULL) {
                output->advantages[t] = (float)base;
                continue;
            }
            if (full) {
                signal_sum += (double)batch->divergence[t];
                signal_tokens++;
                output->advantages[t] = (float)base;
                output->divergence_weights[t] = (float)config->c;
                continue;
            }
            double signal = (double)batch->teacher_logprob[t] - (double)batch->old_logprob[t];
            signal_sum += signal;
            signal_tokens++;
            output->advantages[t] = (float)(base + config->c * 1.0 * signal);
        }
        steps[kept] = last_step;
        per_seq[kept] = signal_sum;
        kept++;
    }
    double signal_total = sorted_sum(per_seq, kept);
    double steps_total = sorted_sum(steps, kept);

    emit(output, "reward_mean", used ? reward_sum / (double)used : 0.0);
    emit(output, "groups", (double)groups);
    emit(output, "zero_variance_groups", (double)zero_variance_groups);
    emit(output, "dropped_sequences", (double)(sequences - used));
    emit(output, "mean_steps", kept ? steps_total / (double)kept : 0.0);
    emit(output, full ? "mean_divergence" : "mean_signal",
         signal_tokens ? signal_total / (double)signal_tokens : 0.0);
    free(members);
    free(outcome);
    free(per_seq);
    free(steps);
    return SOD_LOSS_OK;
}

static void opd_destroy(void *instance) { free(instance); }

static const SodLossPlugin OPD_PLUGIN = {
    SOD_LOSS_ABI_VERSION,
    0,
    "c-opd",
    "On-policy distillation written in C (example)",
    opd_create,
    opd_requirements,
    opd_compute,
    opd_destroy,
};

const SodLossPlugin *sod_loss_plugin(void) { return &OPD_PLUGIN; }
