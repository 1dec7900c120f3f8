# SPDX-License-Identifier: Apache-2.0
# tests/distill_smoke.cmake: end-to-end smoke run of `grpo distill` for CI (seconds): a tiny teacher
# made by `grpo sft` on 1-digit additions, then one command per mode (traces, on_policy, topk)
# training a smaller student. Checks the exit status, the before/after accuracy lines, the mode's
# data file (traces.jsonl, teacher_topk.safetensors), metrics.jsonl with the distill keys, the
# checkpoint and the model; a stopped run resumed logs each step once; then that a traces file with
# a malformed row is refused by name (leaving no metrics.jsonl) and a missing teacher too.
#   cmake -DGRPO=path/to/grpo -DWORK_DIR=dir [-DPYTHON=python3 -DPLOT=cmake/plot_metrics.py] -P tests/distill_smoke.cmake
if(NOT GRPO OR NOT WORK_DIR)
  message(FATAL_ERROR "distill_smoke: pass -DGRPO=<grpo executable> -DWORK_DIR=<scratch directory>")
endif()
file(REMOVE_RECURSE "${WORK_DIR}")
set(task_args --set task.operations=+ --set task.max_digits=1 --set task.heldout_size=8 --set eval.size=8
              --set eval.num_samples=0 --set threads=1 --set max_completion_length=24)
execute_process(
  COMMAND "${GRPO}" sft --output-dir "${WORK_DIR}/teacher" --seed 3 ${task_args}
    --set model.hidden_size=32 --set model.intermediate_size=64 --set model.num_hidden_layers=1
    --set model.num_attention_heads=2 --set model.num_key_value_heads=1
    --set sft.steps=120 --set sft.batch_size=16 --set sft.learning_rate=0.01
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "distill_smoke: grpo sft (the teacher) exited with ${rc}\n${out}\n${err}")
endif()
set(student_args --set model.hidden_size=16 --set model.intermediate_size=32 --set model.num_hidden_layers=1
                 --set model.num_attention_heads=2 --set model.num_key_value_heads=1)
foreach(mode traces on_policy topk)
  execute_process(
    COMMAND "${GRPO}" distill --output-dir "${WORK_DIR}/${mode}" --teacher "${WORK_DIR}/teacher/model" --seed 5
      ${task_args} ${student_args} --set distill.mode=${mode} --set distill.steps=3 --set distill.batch_size=8
      --set distill.num_prompts=32 --set distill.num_samples=4 --set distill.top_k=4 --set sft.examples=16
      --set distill.require_format=false
    RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "distill_smoke: grpo distill (${mode}) exited with ${rc}\n${out}\n${err}")
  endif()
  foreach(line "[eval] teacher:" "held-out accuracy before distillation:" "held-out accuracy after distillation:")
    string(FIND "${out}" "${line}" at)
    if(at EQUAL -1)
      message(FATAL_ERROR "distill_smoke: the ${mode} output lacks '${line}'\n${out}")
    endif()
  endforeach()
  set(data_file)
  if(mode STREQUAL "traces")
    set(data_file traces.jsonl)
  elseif(mode STREQUAL "topk")
    set(data_file teacher_topk.safetensors)
  endif()
  foreach(file metrics.jsonl model/model.safetensors model/config.json checkpoint/trainer_state.json
          checkpoint/config.toml ${data_file})
    if(NOT EXISTS "${WORK_DIR}/${mode}/${file}")
      message(FATAL_ERROR "distill_smoke: ${WORK_DIR}/${mode}/${file} was not written")
    endif()
  endforeach()
  file(STRINGS "${WORK_DIR}/${mode}/metrics.jsonl" records)
  list(LENGTH records n)
  if(NOT n EQUAL 3)
    message(FATAL_ERROR "distill_smoke: expected 3 metrics records for ${mode}, got ${n}")
  endif()
  list(GET records -1 last)
  foreach(key step distill/loss distill/kl distill/top1_agreement actor/grad_norm lr perf/train_tokens_per_s)
    string(JSON value ERROR_VARIABLE missing GET "${last}" "${key}")
    if(missing)
      message(FATAL_ERROR "distill_smoke: the last ${mode} metrics record lacks \"${key}\": ${last}")
    endif()
  endforeach()
endforeach()
# Stopped after 2 steps, a record logged past the checkpoint (as by a run killed later), then resumed:
# the resume cuts the file back to the checkpoint's records, so each step is logged once.
set(resume_dir "${WORK_DIR}/resume")
set(resume_args --teacher "${WORK_DIR}/teacher/model" --seed 5 ${task_args} ${student_args}
                --set distill.mode=on_policy --set distill.steps=3 --set distill.batch_size=8 --set sft.examples=16)
execute_process(COMMAND "${GRPO}" distill --output-dir "${resume_dir}" ${resume_args} --stop-after 2
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "distill_smoke: grpo distill --stop-after 2 exited with ${rc}\n${out}\n${err}")
endif()
file(APPEND "${resume_dir}/metrics.jsonl" "{\"step\": 3, \"logged\": \"after the checkpoint\"}\n")
execute_process(COMMAND "${GRPO}" distill --output-dir "${resume_dir}" ${resume_args}
  --resume "${resume_dir}/checkpoint" RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "distill_smoke: the resumed grpo distill exited with ${rc}\n${out}\n${err}")
endif()
file(STRINGS "${resume_dir}/metrics.jsonl" records)
set(steps)
foreach(record IN LISTS records)
  string(JSON step GET "${record}" step)
  list(APPEND steps ${step})
endforeach()
if(NOT steps STREQUAL "1;2;3")
  message(FATAL_ERROR "distill_smoke: after the resume metrics.jsonl holds steps '${steps}', expected 1;2;3")
endif()
# Learning curves of a distillation run (when Python with matplotlib is there: cmake/plot_metrics.py).
if(PYTHON AND PLOT)
  execute_process(COMMAND "${PYTHON}" "${PLOT}" "${WORK_DIR}/on_policy/metrics.jsonl" "${WORK_DIR}/curves.png"
    RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  string(FIND "${err}" "matplotlib is not installed" no_matplotlib)
  if(no_matplotlib EQUAL -1)
    string(FIND "${out}" "(3 distillation steps)" drew)
    if(NOT rc EQUAL 0 OR drew EQUAL -1 OR NOT EXISTS "${WORK_DIR}/curves.png")
      message(FATAL_ERROR "distill_smoke: plot_metrics.py failed on a distill run (${rc})\n${out}\n${err}")
    endif()
  endif()
endif()
# A malformed traces file and a teacher that cannot load: errors naming them.
file(WRITE "${WORK_DIR}/bad.jsonl" "{\"prompt\": \"1+1=\"}\n")
execute_process(
  COMMAND "${GRPO}" distill --output-dir "${WORK_DIR}/bad-traces" --teacher "${WORK_DIR}/teacher/model" ${task_args}
    ${student_args} --set distill.traces_file=${WORK_DIR}/bad.jsonl --set distill.steps=1
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
string(FIND "${err}" "bad.jsonl:1: missing field" at)
if(rc EQUAL 0 OR at EQUAL -1)
  message(FATAL_ERROR "distill_smoke: a malformed traces file was not refused by name (${rc})\n${err}")
endif()
if(EXISTS "${WORK_DIR}/bad-traces/metrics.jsonl")
  message(FATAL_ERROR "distill_smoke: a run refused for its traces file left a metrics.jsonl behind")
endif()
execute_process(
  COMMAND "${GRPO}" distill --output-dir "${WORK_DIR}/bad-teacher" --teacher "${WORK_DIR}/no-such-teacher" ${task_args}
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
string(FIND "${err}" "distill.teacher: ${WORK_DIR}/no-such-teacher" at)
if(rc EQUAL 0 OR at EQUAL -1)
  message(FATAL_ERROR "distill_smoke: a missing teacher was not refused by name (${rc})\n${err}")
endif()
message(STATUS "distill_smoke: ok")
