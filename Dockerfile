# mediatasks worker / Flower image. Debian's ffmpeg has NVENC, QSV and VAAPI encoders built in;
# the NVIDIA container runtime provides libcuda for worker-gpu.
FROM python:3.11-slim-bookworm

RUN apt-get update \
 && apt-get install -y --no-install-recommends ffmpeg \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md celeryconfig.py ./
COPY mediatasks ./mediatasks
RUN pip install --no-cache-dir .

RUN useradd --create-home --uid 1000 mediatasks && mkdir -p /work /state \
 && chown mediatasks /work /state
USER mediatasks
ENV MEDIATASKS_WORK_DIR=/work
CMD ["celery", "-A", "mediatasks", "worker", "-Q", "cpu,io", "-E"]
